"""Journeys that react to the product (JourneyVersion.JOURNEYS), on the time-skipping server:
performed / not_performed conditions, wait-until, goals, pauses during a wait, and the reason
of every decision. Activities are the fakes of test_recipient.py; the workflow is the real one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from domain.journey import (
    CampaignChange,
    CampaignStatus,
    ConditionPlan,
    GoalPlan,
    JourneyPlan,
    JourneyState,
    JourneyVersion,
    ProductEvent,
    StepPlan,
    WaitingKind,
)
from tests.workflows.test_recipient import HOUR, Fakes, event, journey, step
from workflows.recipient import RecipientWorkflow

PRICING = "https://app.example.com/pricing"


def plan(*steps: StepPlan, goal: GoalPlan | None = None) -> JourneyPlan:
    return JourneyPlan(campaign_id=1, steps=list(steps), goal=goal)


def waits(condition: ConditionPlan, hours: float) -> ConditionPlan:
    condition.wait_seconds = hours * HOUR
    return condition


def product(name: str, at: datetime, **properties: Any) -> ProductEvent:
    return ProductEvent(f"evt_{uuid.uuid4().hex[:8]}", name, at.isoformat(), properties)


@asynccontextmanager
async def journeys(
    env: WorkflowEnvironment, fakes: Fakes, **options: Any
) -> AsyncIterator[tuple[WorkflowHandle, datetime]]:
    """A JOURNEYS journey on its pinned plan, enrolled now; yields it and its start time."""
    start = await env.get_current_time()
    options.setdefault("enrolled_at", start.isoformat())
    async with journey(
        env, fakes, local_bookkeeping=True, plan=fakes.plan, version=JourneyVersion.JOURNEYS,
        **options,
    ) as handle:  # fmt: skip
        yield handle, start


async def at(env: WorkflowEnvironment, start: datetime, hours: float) -> datetime:
    """Skip to `hours` after the start; that time."""
    now = await env.get_current_time()
    await env.sleep(start + timedelta(hours=hours) - now)
    return await env.get_current_time()


def hours_after(start: datetime, moment: datetime) -> float:
    return (moment - start).total_seconds() / HOUR


def times(fakes: Fakes, start: datetime) -> list[tuple[int, str, float]]:
    """(step, decision, hours after the start) of every step acted on. (A local activity's
    scheduled time is not the server's skipped clock: skips are timed by decided_at.)"""
    return [(o, d, round(hours_after(start, t), 2)) for o, d, _, t in fakes.actions]


def decided(final: JourneyState, start: datetime) -> list[tuple[int, str, float]]:
    """(step, decision, hours after the start) of every step decided, as the journey says."""
    return [
        (
            s.step_order,
            s.decision,
            round(hours_after(start, datetime.fromisoformat(s.decided_at)), 2),
        )
        for s in final.steps
    ]


async def state(handle: WorkflowHandle) -> JourneyState:
    return await handle.query(RecipientWorkflow.progress)


async def replays(handle: WorkflowHandle) -> None:
    await Replayer(workflows=[RecipientWorkflow]).replay_workflow(await handle.fetch_history())


# --- wait-until on engagement ----------------------------------------------------------------


async def test_wait_until_met_early_sends_at_the_event(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(
        plan(
            step(1, 0),
            step(2, 24, waits(ConditionPlan("opened", 10), 48), alternative=True),
            step(3, 24),
        )
    )
    async with journeys(time_env, fakes) as (handle, start):
        await at(time_env, start, 25)
        waiting = (await state(handle)).waiting_for
        assert waiting is not None and waiting.kind == WaitingKind.WAIT_UNTIL
        assert waiting.condition == "opened(step 1)" and waiting.step_order == 2
        assert waiting.until is not None
        assert round(hours_after(start, datetime.fromisoformat(waiting.until))) == 72
        await at(time_env, start, 30)
        await handle.signal(RecipientWorkflow.on_event, event("open", 10, event_id="evt_open"))
        assert await handle.result() == "completed"
        steps = (await state(handle)).steps
        await replays(handle)
    (s1, d1, t1), (s2, d2, t2), (s3, d3, t3) = times(fakes, start)
    assert (d1, d2, d3) == ("sent", "sent", "sent")
    assert 30 <= t2 < 30.1, f"step 2 went out {t2} h in, not at the open (30 h)"
    assert 54 <= t3 < 54.1, "step 3's delay counts from step 2's send"
    assert steps[1].reason is not None
    assert steps[1].reason.startswith("sent: opened(step 1) met — human open at ")
    assert steps[1].reason.endswith("(evt_open)")
    assert [e.event_id for e in steps[1].evidence] == ["evt_open"]


async def test_wait_until_timed_out_sends_the_alternative_at_the_timeout(
    time_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24, waits(ConditionPlan("opened", 10), 48), True)))
    async with journeys(time_env, fakes) as (handle, start):
        assert await handle.result() == "completed"
        steps = (await state(handle)).steps
    assert [(s, d) for s, d, _ in times(fakes, start)] == [(1, "sent"), (2, "alternative")]
    assert 72 <= times(fakes, start)[1][2] < 72.1
    assert steps[1].reason == "alternative sent: opened(step 1) not met within 48 h"
    assert steps[1].evidence == []


async def test_negative_wait_fails_early_at_the_click(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(
        plan(step(1, 0), step(2, 24, waits(ConditionPlan("not_clicked", 10, PRICING), 48), True))
    )
    async with journeys(time_env, fakes) as (handle, start):
        await at(time_env, start, 28)
        other = event("click", 10, "https://app.example.com/blog")
        await handle.signal(RecipientWorkflow.on_event, other)  # another link: no
        await at(time_env, start, 30)
        await handle.signal(RecipientWorkflow.on_event, event("click", 10, PRICING, "evt_c"))
        assert await handle.result() == "completed"
        steps = (await state(handle)).steps
    assert times(fakes, start)[1][:2] == (2, "alternative")
    assert 30 <= times(fakes, start)[1][2] < 30.1
    reason = steps[1].reason or ""
    assert reason.startswith(f"alternative sent: not_clicked(step 1, {PRICING}) failed — human")
    assert reason.endswith("(evt_c)") and f"on {PRICING}" in reason


async def test_negative_wait_met_at_the_end(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24, waits(ConditionPlan("not_clicked", 10), 48))))
    async with journeys(time_env, fakes) as (handle, start):
        assert await handle.result() == "completed"
        steps = (await state(handle)).steps
    assert times(fakes, start)[1][:2] == (2, "sent")
    assert 72 <= times(fakes, start)[1][2] < 72.1
    assert steps[1].reason == "sent: not_clicked(step 1) met — no human click within 48 h"


async def test_settled_before_the_step_is_due_means_no_wait(
    time_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(
        plan(
            step(1, 0),
            step(2, 24, waits(ConditionPlan("opened", 10), 48)),
            step(3, 0, waits(ConditionPlan("not_opened", 10), 48)),
        )
    )
    async with journeys(time_env, fakes) as (handle, start):
        await at(time_env, start, 1)
        await handle.signal(RecipientWorkflow.on_event, event("open", 10))
        assert await handle.result() == "completed"
        final = await state(handle)
    (_, _, _), (s2, d2, t2), (s3, d3, t3) = decided(final, start)
    assert (d2, d3) == ("sent", "skipped")
    assert 24 <= t2 < 24.1 and 24 <= t3 < 24.1, "a settled condition waited"


async def test_a_machine_click_does_not_settle_a_wait(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24, waits(ConditionPlan("clicked", 10), 48), True)))
    async with journeys(time_env, fakes) as (handle, start):
        await at(time_env, start, 30)
        bot = event("click", 10, PRICING, machine=True)
        await handle.signal(RecipientWorkflow.on_event, bot)
        await at(time_env, start, 31)
        assert (await state(handle)).steps[-1].step_order == 1, "the bot click settled it"
        assert await handle.result() == "completed"
    assert times(fakes, start)[1][:2] == (2, "alternative")
    assert times(fakes, start)[1][2] >= 72


async def test_exits_end_a_wait_at_once(time_env: WorkflowEnvironment) -> None:
    for signal, arg, status in [
        (RecipientWorkflow.on_event, event("unsubscribe", 10), "unsubscribed"),
        (RecipientWorkflow.remove, "removed by API", "removed"),
        (RecipientWorkflow.campaign_changed, CampaignChange(CampaignStatus.ARCHIVED, 5), "archived"),
    ]:  # fmt: skip
        fakes = Fakes(plan(step(1, 0), step(2, 24, waits(ConditionPlan("opened", 10), 48))))
        async with journeys(time_env, fakes) as (handle, start):
            await at(time_env, start, 30)
            await handle.signal(signal, arg)  # type: ignore[arg-type]
            assert await handle.result() == status
        assert fakes.decisions() == [(1, "sent")]
        assert hours_after(start, fakes.finished[0][1]) < 30.1, status


# --- performed / not_performed ---------------------------------------------------------------


async def test_performed_with_where_waits_for_the_matching_event(
    time_env: WorkflowEnvironment,
) -> None:
    upgraded = ConditionPlan("performed", 0, event="plan.upgraded", where={"plan": "pro"})
    fakes = Fakes(plan(step(1, 0), step(2, 24, waits(upgraded, 48), alternative=True)))
    async with journeys(time_env, fakes) as (handle, start):
        now = await at(time_env, start, 30)
        await handle.signal(
            RecipientWorkflow.on_tracked, product("plan.upgraded", now, plan="basic")
        )
        await handle.signal(RecipientWorkflow.on_tracked, product("plan.viewed", now, plan="pro"))
        now = await at(time_env, start, 40)
        pro = product("plan.upgraded", now, plan="pro", seats=3)
        await handle.signal(RecipientWorkflow.on_tracked, pro)
        await handle.signal(RecipientWorkflow.on_tracked, pro)  # a re-drive: counted once
        assert await handle.result() == "completed"
        steps = (await state(handle)).steps
        await replays(handle)
    assert times(fakes, start)[1][:2] == (2, "sent")
    assert 40 <= times(fakes, start)[1][2] < 40.1, "not sent at the matching event"
    assert [e.event_id for e in steps[1].evidence] == [pro.event_id]
    assert steps[1].reason is not None and steps[1].reason.startswith(
        "sent: performed(plan.upgraded, where plan=pro) met — plan.upgraded at "
    )
    # It read the table when the step fell due (events tracked before the journey started).
    assert [(q.names, q.email) for q in fakes.loads] == [(["plan.upgraded"], "maya@example.net")]


async def test_not_performed_with_match_ignores_another_carts_order(
    time_env: WorkflowEnvironment,
) -> None:
    """Abandoned cart: step 2 goes only to those who did not complete *this* cart's order."""
    no_order = ConditionPlan("not_performed", 0, event="order.completed", match=["cart_id"])
    for order_cart, expected, hours in [("c2", "sent", 72), ("c1", "skipped", 30)]:
        fakes = Fakes(plan(step(1, 0), step(2, 24, waits(no_order, 48))))
        start = await time_env.get_current_time()
        trigger = product("cart.abandoned", start, cart_id="c1")
        async with journeys(time_env, fakes, trigger=trigger) as (handle, start):
            now = await at(time_env, start, 30)
            order = product("order.completed", now, cart_id=order_cart)
            await handle.signal(RecipientWorkflow.on_tracked, order)
            assert await handle.result() == "completed"
            final = await state(handle)
            steps = final.steps
        assert decided(final, start)[1][:2] == (2, expected), order_cart
        assert hours <= decided(final, start)[1][2] < hours + 0.1, order_cart
        words = "not_performed(order.completed, match cart_id)"
        if expected == "skipped":
            assert steps[1].reason == (
                f"skipped: {words} failed — order.completed at "
                f"{steps[1].evidence[0].at and steps[1].evidence[0].at[:19]}Z "
                f"({order.event_id})"
            )
        else:
            assert steps[1].reason == f"sent: {words} met — no order.completed event within 48 h"


async def test_an_event_before_the_enrollment_never_counts(time_env: WorkflowEnvironment) -> None:
    started = ConditionPlan("performed", 0, event="trial.started")
    fakes = Fakes(plan(step(1, 0), step(2, 24, started)))
    now = await time_env.get_current_time()
    fakes.tracked = [product("trial.started", now - timedelta(hours=1))]  # in the table
    async with journeys(time_env, fakes, enrolled_at=now.isoformat()) as (handle, start):
        await at(time_env, start, 1)
        before = product("trial.started", now - timedelta(minutes=5))  # signalled late
        await handle.signal(RecipientWorkflow.on_tracked, before)
        assert await handle.result() == "completed"
    assert fakes.decisions() == [(1, "sent"), (2, "skipped")]


async def test_an_event_tracked_while_the_journey_started_counts(
    time_env: WorkflowEnvironment,
) -> None:
    """Never signalled (the journey did not exist yet): read back when the step falls due."""
    started = ConditionPlan("performed", 0, event="trial.started")
    fakes = Fakes(plan(step(1, 0), step(2, 24, started)))
    now = await time_env.get_current_time()
    fakes.tracked = [product("trial.started", now + timedelta(seconds=1))]
    async with journeys(time_env, fakes, enrolled_at=now.isoformat()) as (handle, _):
        assert await handle.result() == "completed"
    assert fakes.decisions() == [(1, "sent"), (2, "sent")]


# --- goals -----------------------------------------------------------------------------------

GOAL = GoalPlan("order.completed", where={"currency": "EUR"}, window_seconds=72 * HOUR)


async def test_a_goal_ends_the_journey_converted_mid_delay(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 72), step(3, 24), goal=GOAL))
    async with journeys(time_env, fakes) as (handle, start):
        now = await at(time_env, start, 10)
        await handle.signal(RecipientWorkflow.on_tracked, product("order.completed", now))
        await handle.signal(
            RecipientWorkflow.on_tracked, product("order.completed", now, currency="USD")
        )
        await at(time_env, start, 11)
        assert (await state(handle)).status == "active", "a goal not matching `where` ended it"
        goal = product("order.completed", now, currency="EUR")
        await handle.signal(RecipientWorkflow.on_tracked, goal)
        assert await handle.result() == "converted"
        final = await state(handle)
        await replays(handle)
    assert fakes.decisions() == [(1, "sent")]
    status, finished_at = fakes.finished[0]
    assert status == "converted" and hours_after(start, finished_at) < 11.1
    assert final.exit_reason is not None and final.exit_reason.endswith(f"({goal.event_id})")


async def test_a_goal_ends_the_journey_mid_wait(time_env: WorkflowEnvironment) -> None:
    goal = GoalPlan("order.completed")
    fakes = Fakes(
        plan(step(1, 0), step(2, 24, waits(ConditionPlan("opened", 10), 48), True), goal=goal)
    )
    async with journeys(time_env, fakes) as (handle, start):
        now = await at(time_env, start, 30)
        await handle.signal(RecipientWorkflow.on_tracked, product("order.completed", now))
        assert await handle.result() == "converted"
    assert fakes.decisions() == [(1, "sent")]
    assert hours_after(start, fakes.finished[0][1]) < 30.1


async def test_a_goal_tracked_while_the_journey_started_ends_it(
    time_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24), goal=GoalPlan("order.completed")))
    now = await time_env.get_current_time()
    fakes.tracked = [product("order.completed", now)]
    async with journeys(time_env, fakes, enrolled_at=now.isoformat()) as (handle, _):
        assert await handle.result() == "converted"
    assert fakes.decisions() == []


async def test_a_goal_without_exit_does_not_end_the_journey(
    time_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24), goal=GoalPlan("order.completed", exit=False)))
    async with journeys(time_env, fakes) as (handle, start):
        now = await at(time_env, start, 1)
        await handle.signal(RecipientWorkflow.on_tracked, product("order.completed", now))
        assert await handle.result() == "completed"
    assert fakes.decisions() == [(1, "sent"), (2, "sent")]


async def test_older_journeys_ignore_tracked_events(time_env: WorkflowEnvironment) -> None:
    """A journey started before JOURNEYS runs as it always did, whatever it is signalled."""
    fakes = Fakes(plan(step(1, 0), step(2, 24), goal=GoalPlan("order.completed")))
    async with journey(
        time_env, fakes, local_bookkeeping=True, plan=fakes.plan,
        version=JourneyVersion.PINNED_PLAN,
    ) as handle:  # fmt: skip
        start = await time_env.get_current_time()
        await at(time_env, start, 1)
        now = await time_env.get_current_time()
        await handle.signal(RecipientWorkflow.on_tracked, product("order.completed", now))
        assert await handle.result() == "completed"
    assert fakes.decisions() == [(1, "sent"), (2, "sent")]
    assert fakes.loads == []


# --- a pause during a wait ---------------------------------------------------------------------


async def test_a_pause_holds_a_settled_wait_and_resume_sends_only_the_decision(
    time_env: WorkflowEnvironment,
) -> None:
    """The wait runs out while paused (not_opened met: the message); an open during the pause
    must not turn it into the alternative on resume."""
    fakes = Fakes(plan(step(1, 0), step(2, 24, waits(ConditionPlan("not_opened", 10), 48), True)))
    async with journeys(time_env, fakes) as (handle, start):
        await at(time_env, start, 30)
        fakes.held = True  # paused in the database
        await handle.signal(
            RecipientWorkflow.campaign_changed, CampaignChange(CampaignStatus.PAUSED, 2)
        )
        await at(time_env, start, 80)  # the wait ran out at 72 h
        held = await state(handle)
        assert held.paused and fakes.decisions() == [(1, "sent")]
        assert held.waiting_for is not None and held.waiting_for.kind == WaitingKind.PAUSED
        await handle.signal(RecipientWorkflow.on_event, event("open", 10))
        await at(time_env, start, 90)
        fakes.held = False
        await handle.signal(
            RecipientWorkflow.campaign_changed, CampaignChange(CampaignStatus.ACTIVE, 3)
        )
        assert await handle.result() == "completed"
        await replays(handle)
    assert fakes.decisions() == [(1, "sent"), (2, "sent")]
    assert 90 <= times(fakes, start)[1][2] < 90.1, "not released at the resume"


async def test_a_pause_holds_a_wait_settled_early_as_decided(
    time_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24, waits(ConditionPlan("not_opened", 10), 48), True)))
    async with journeys(time_env, fakes) as (handle, start):
        await at(time_env, start, 30)
        fakes.held = True
        await handle.signal(
            RecipientWorkflow.campaign_changed, CampaignChange(CampaignStatus.PAUSED, 2)
        )
        await at(time_env, start, 31)
        await handle.signal(RecipientWorkflow.on_event, event("open", 10))  # settles: failed
        await at(time_env, start, 40)
        fakes.held = False
        await handle.signal(
            RecipientWorkflow.campaign_changed, CampaignChange(CampaignStatus.ACTIVE, 3)
        )
        assert await handle.result() == "completed"
    assert fakes.decisions() == [(1, "sent"), (2, "alternative")]
    assert 40 <= times(fakes, start)[1][2] < 40.1


# --- what the journey shows: waiting_for, current details, summaries ---------------------------


async def test_waiting_for_details_and_summaries_name_the_step(
    time_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24, waits(ConditionPlan("clicked", 10), 48), True)))
    async with journeys(time_env, fakes) as (handle, start):
        await at(time_env, start, 1)
        delay = (await state(handle)).waiting_for
        assert delay is not None and delay.kind == WaitingKind.DELAY and delay.step_order == 2
        assert delay.reason.startswith("step 2 is due at ") and delay.until is not None
        details = await current_details(handle)
        assert details == delay.reason
        await at(time_env, start, 30)
        wait = (await state(handle)).waiting_for
        assert wait is not None and wait.kind == WaitingKind.WAIT_UNTIL
        assert wait.reason.startswith("step 2 waits until ") and "clicked(step 1)" in wait.reason
        assert await current_details(handle) == wait.reason
        assert await handle.result() == "completed"
        done = await state(handle)
        history = await handle.fetch_history()
    assert done.waiting_for is None and done.version == JourneyVersion.JOURNEYS
    summaries = []
    for e in history.events:
        if e.event_type in (
            EventType.EVENT_TYPE_TIMER_STARTED,
            EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
        ):
            summaries.append(e.user_metadata.summary.data.decode())
    assert summaries == [
        '"step 1: send (sent)"',
        '"step 2 due"',
        '"step 2: wait for clicked(step 1)"',
        '"step 2: send (alternative)"',
    ]


async def current_details(handle: WorkflowHandle) -> str:
    """The details the Temporal UI shows for the run now."""
    metadata = await handle.query("__temporal_workflow_metadata")
    return str(metadata.current_details)
