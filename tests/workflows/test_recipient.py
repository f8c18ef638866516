"""Every branch of the recipient journey, on the time-skipping server: days of delays in seconds.

Activities are fakes registered under the real names; the workflow is the real one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.conditions import parse_utc
from domain.journey import (
    CampaignChange,
    CampaignStatus,
    ConditionPlan,
    EngagementSignal,
    FinishInput,
    JourneyPlan,
    JourneyState,
    JourneyVersion,
    ProductEvent,
    RecipientInput,
    StepInput,
    StepOutcome,
    StepPlan,
    StepResult,
    TrackedEventsQuery,
    WaitingKind,
)
from tests.support.eventually import eventually
from workflows.recipient import RecipientWorkflow

HOUR = 3600.0
ACTIVE, PAUSED = CampaignStatus.ACTIVE, CampaignStatus.PAUSED


@dataclass
class Fakes:
    plan: JourneyPlan
    held: bool = False
    bounce_at_step: int | None = None
    actions: list[tuple[int, str, bool | None, datetime]] = field(default_factory=list)
    finished: list[tuple[str, datetime]] = field(default_factory=list)
    # The tracked_event table, as load_tracked_events reads it; and what it was asked.
    tracked: list[ProductEvent] = field(default_factory=list)
    loads: list[TrackedEventsQuery] = field(default_factory=list)

    @activity.defn(name="load_plan")
    async def load_plan(self, campaign_id: int) -> JourneyPlan:
        return self.plan

    @activity.defn(name="send_step")
    async def send_step(self, step: StepInput) -> StepResult:
        if self.held:
            return StepResult(StepOutcome.HELD, reason="campaign paused")
        if step.step_order == self.bounce_at_step:
            return StepResult(StepOutcome.ENDED, exit_status="bounced", reason="550 5.1.1")
        self.actions.append(
            (step.step_order, step.decision, step.condition_met, activity.info().scheduled_time)
        )
        return StepResult(StepOutcome.DONE, delivery_id=f"d{step.step_order}")

    @activity.defn(name="record_skip")
    async def record_skip(self, step: StepInput) -> StepResult:
        if self.held:
            return StepResult(StepOutcome.HELD)
        self.actions.append(
            (step.step_order, step.decision, step.condition_met, activity.info().scheduled_time)
        )
        return StepResult(StepOutcome.DONE, delivery_id=f"d{step.step_order}")

    @activity.defn(name="finish_journey")
    async def finish_journey(self, finish: FinishInput) -> None:
        self.finished.append((finish.status, activity.info().scheduled_time))

    @activity.defn(name="load_tracked_events")
    async def load_tracked_events(self, query: TrackedEventsQuery) -> list[ProductEvent]:
        self.loads.append(query)
        since = parse_utc(query.since)
        return [
            e for e in self.tracked
            if e.name in query.names and parse_utc(e.occurred_at) >= since
        ]  # fmt: skip

    def decisions(self) -> list[tuple[int, str]]:
        return [(order, decision) for order, decision, _, _ in self.actions]


def plan(*steps: StepPlan) -> JourneyPlan:
    return JourneyPlan(campaign_id=1, steps=list(steps))


def step(
    order: int, hours: float, condition: ConditionPlan | None = None, alternative: bool = False
) -> StepPlan:
    return StepPlan(
        step_id=order * 10,
        step_order=order,
        delay_seconds=hours * HOUR,
        condition=condition,
        has_alternative=alternative,
    )


@asynccontextmanager
async def journey(
    env: WorkflowEnvironment, fakes: Fakes, **options: Any
) -> AsyncIterator[WorkflowHandle]:
    """A journey on its own task queues; `options`: more RecipientInput fields."""
    queue, send_queue = f"j-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    async with (
        Worker(
            env.client,
            task_queue=queue,
            workflows=[RecipientWorkflow],
            activities=[
                fakes.load_plan,
                fakes.record_skip,
                fakes.finish_journey,
                fakes.load_tracked_events,
            ],
        ),
        Worker(env.client, task_queue=send_queue, activities=[fakes.send_step]),
    ):
        handle = await env.client.start_workflow(
            RecipientWorkflow.run,
            RecipientInput(
                1,
                1,
                "maya@example.net",
                pause_recheck_seconds=24 * HOUR,
                send_task_queue=send_queue,
                **options,
            ),
            id=f"drip-test-{uuid.uuid4()}",
            task_queue=queue,
        )
        yield handle


def event(
    kind: str,
    step_id: int | None = None,
    url: str | None = None,
    event_id: str | None = None,
    machine: bool = False,
) -> EngagementSignal:
    return EngagementSignal(event_id or str(uuid.uuid4()), kind, step_id, url, machine)


async def test_every_step_goes_out_after_its_delay(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24), step(3, 72)))
    async with journey(time_env, fakes) as handle:
        assert await handle.result() == "completed"
    assert fakes.decisions() == [(1, "sent"), (2, "sent"), (3, "sent")]
    times = [at for *_, at in fakes.actions]
    assert times[1] - times[0] >= timedelta(hours=24)
    assert times[2] - times[1] >= timedelta(hours=72)
    assert fakes.finished[0][0] == "completed"


async def test_still_interested_sent_when_step_2_was_not_opened(
    time_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24), step(3, 48, ConditionPlan("not_opened", 20))))
    async with journey(time_env, fakes) as handle:
        assert await handle.result() == "completed"
    assert fakes.decisions() == [(1, "sent"), (2, "sent"), (3, "sent")]
    assert fakes.actions[2][2] is True


async def test_still_interested_skipped_when_step_2_was_opened(
    time_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24), step(3, 48, ConditionPlan("not_opened", 20))))
    async with journey(time_env, fakes) as handle:
        await time_env.sleep(timedelta(hours=30))
        assert fakes.decisions() == [(1, "sent"), (2, "sent")]
        await handle.signal(RecipientWorkflow.on_event, event("open", step_id=20))
        assert await handle.result() == "completed"
    assert fakes.decisions() == [(1, "sent"), (2, "sent"), (3, "skipped")]
    assert fakes.actions[2][2] is False


async def test_click_on_another_link_sends_the_alternative(time_env: WorkflowEnvironment) -> None:
    wanted = "https://app.example.com/pricing"
    fakes = Fakes(
        plan(step(1, 0), step(2, 24, ConditionPlan("clicked", 10, wanted), alternative=True))
    )
    async with journey(time_env, fakes) as handle:
        await time_env.sleep(timedelta(hours=1))
        await handle.signal(
            RecipientWorkflow.on_event, event("click", 10, "https://app.example.com/blog")
        )
        assert await handle.result() == "completed"
    assert fakes.decisions() == [(1, "sent"), (2, "alternative")]


async def test_click_on_the_named_link_sends_the_step(time_env: WorkflowEnvironment) -> None:
    wanted = "https://app.example.com/pricing"
    fakes = Fakes(
        plan(step(1, 0), step(2, 24, ConditionPlan("clicked", 10, wanted), alternative=True))
    )
    async with journey(time_env, fakes) as handle:
        await time_env.sleep(timedelta(hours=1))
        await handle.signal(RecipientWorkflow.on_event, event("click", 10, wanted + "/"))
        assert await handle.result() == "completed"
    assert fakes.decisions() == [(1, "sent"), (2, "sent")]


async def test_a_click_counts_as_an_open(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24, ConditionPlan("opened", 10))))
    async with journey(time_env, fakes) as handle:
        await time_env.sleep(timedelta(hours=1))
        await handle.signal(RecipientWorkflow.on_event, event("click", 10, "https://x.example/"))
        assert await handle.result() == "completed"
    assert fakes.decisions() == [(1, "sent"), (2, "sent")]


async def test_machine_opens_do_not_meet_an_opened_condition(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24, ConditionPlan("opened", 10))))
    async with journey(time_env, fakes) as handle:
        await time_env.sleep(timedelta(hours=1))
        await handle.signal(RecipientWorkflow.on_event, event("open", 10, machine=True))
        assert await handle.result() == "completed"
    assert fakes.decisions() == [(1, "sent"), (2, "skipped")]


async def test_unsubscribe_mid_delay_ends_the_journey_at_once(
    time_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 72), step(3, 72)))
    async with journey(time_env, fakes) as handle:
        await time_env.sleep(timedelta(hours=1))
        await handle.signal(RecipientWorkflow.on_event, event("unsubscribe", 10))
        assert await handle.result() == "unsubscribed"
    assert fakes.decisions() == [(1, "sent")]
    sent_at, (status, finished_at) = fakes.actions[0][3], fakes.finished[0]
    assert status == "unsubscribed"
    assert finished_at - sent_at < timedelta(hours=2), "exit did not wait for the 72 h delay"


async def test_hard_bounce_event_mid_delay_ends_the_journey(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 72)))
    async with journey(time_env, fakes) as handle:
        await time_env.sleep(timedelta(hours=5))
        await handle.signal(RecipientWorkflow.on_event, event("bounce_hard", 10))
        assert await handle.result() == "bounced"
    assert fakes.decisions() == [(1, "sent")]
    assert fakes.finished[0][1] - fakes.actions[0][3] < timedelta(hours=6)


async def test_soft_bounce_never_ends_a_journey(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24)))
    async with journey(time_env, fakes) as handle:
        await time_env.sleep(timedelta(hours=1))
        await handle.signal(RecipientWorkflow.on_event, event("bounce_soft", 10))
        assert await handle.result() == "completed"
    assert fakes.decisions() == [(1, "sent"), (2, "sent")]


async def test_bounce_reported_by_the_send_ends_the_journey(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24), step(3, 24)), bounce_at_step=2)
    async with journey(time_env, fakes) as handle:
        assert await handle.result() == "bounced"
    assert fakes.decisions() == [(1, "sent")]


async def test_pause_holds_past_the_due_time_and_resume_releases(
    time_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24), step(3, 24)))
    async with journey(time_env, fakes) as handle:
        await time_env.sleep(timedelta(hours=1))
        fakes.held = True  # the campaign is paused in the database
        await handle.signal(RecipientWorkflow.campaign_status, "paused")
        await time_env.sleep(timedelta(hours=48))  # step 2 fell due 23 h ago
        state = await handle.query(RecipientWorkflow.progress)
        assert state.paused and fakes.decisions() == [(1, "sent")]
        fakes.held = False
        await handle.signal(RecipientWorkflow.campaign_status, "active")
        assert await handle.result() == "completed"
    assert fakes.decisions() == [(1, "sent"), (2, "sent"), (3, "sent")]
    step1, step2, step3 = (at for *_, at in fakes.actions)
    assert step2 - step1 >= timedelta(hours=48), "step 2 went out during the pause"
    assert step3 - step2 >= timedelta(hours=24), "the next delay counts from the actual send"


async def test_pause_discovered_at_send_time_holds_until_the_status_recheck(
    time_env: WorkflowEnvironment,
) -> None:
    # No signal at all (e.g. the batch signal missed this journey): the database says paused.
    fakes = Fakes(plan(step(1, 0), step(2, 24)))
    async with journey(time_env, fakes) as handle:
        await time_env.sleep(timedelta(hours=1))
        fakes.held = True
        await time_env.sleep(timedelta(hours=30))
        assert fakes.decisions() == [(1, "sent")]
        fakes.held = False  # resumed in the database; the journey re-checks every 24 h here
        assert await handle.result() == "completed"
    assert fakes.decisions() == [(1, "sent"), (2, "sent")]


async def test_duplicate_event_id_counted_once(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24)))
    async with journey(time_env, fakes) as handle:
        await time_env.sleep(timedelta(hours=1))
        same = event("open", 10, event_id="sg-evt-1")
        await handle.signal(RecipientWorkflow.on_event, same)
        await handle.signal(RecipientWorkflow.on_event, same)
        await handle.signal(
            RecipientWorkflow.on_event, event("click", 10, "https://a.example/", "sg-evt-2")
        )
        state = await handle.query(RecipientWorkflow.progress)
        assert state.events_counted == 2
        assert state.opened_steps == [10]
        await handle.result()


async def test_condition_on_a_skipped_step(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(
        plan(
            step(1, 0),
            step(2, 24, ConditionPlan("opened", 10)),  # never opened: skipped
            step(3, 24, ConditionPlan("not_opened", 20)),  # on the skipped step: true
            step(4, 24, ConditionPlan("opened", 20)),  # on the skipped step: false
            step(5, 24, ConditionPlan("not_clicked", 20)),  # true
        )
    )
    async with journey(time_env, fakes) as handle:
        assert await handle.result() == "completed"
    assert fakes.decisions() == [
        (1, "sent"),
        (2, "skipped"),
        (3, "sent"),
        (4, "skipped"),
        (5, "sent"),
    ]


async def test_archive_and_removal_end_the_journey(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24)))
    async with journey(time_env, fakes) as handle:
        await time_env.sleep(timedelta(hours=1))
        await handle.signal(RecipientWorkflow.campaign_status, "archived")
        assert await handle.result() == "archived"
    fakes = Fakes(plan(step(1, 0), step(2, 24)))
    async with journey(time_env, fakes) as handle:
        await time_env.sleep(timedelta(hours=1))
        await handle.signal(RecipientWorkflow.remove, "removed by API")
        assert await handle.result() == "removed"
    assert fakes.finished[0][0] == "removed"


async def test_progress_query_shows_the_next_due_step(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24)))
    async with journey(time_env, fakes) as handle:
        await time_env.sleep(timedelta(hours=1))
        state = await handle.query(RecipientWorkflow.progress)
        assert state.status == "active" and state.current_step == 1
        assert state.next_step_due_at is not None
        assert [s.decision for s in state.steps] == ["sent"]
        await handle.result()


async def test_a_pause_overtaken_by_the_resume_after_it_is_ignored(
    time_env: WorkflowEnvironment,
) -> None:
    """Batch signals can arrive out of order: the journey keeps the newest status it heard."""
    fakes = Fakes(plan(step(1, 0), step(2, 24)))
    async with journey(time_env, fakes) as handle:
        await time_env.sleep(timedelta(hours=1))
        await handle.signal(RecipientWorkflow.campaign_changed, CampaignChange(ACTIVE, 3))
        await handle.signal(RecipientWorkflow.campaign_changed, CampaignChange(PAUSED, 2))
        state = await handle.query(RecipientWorkflow.progress)
        assert not state.paused, "a stale pause was applied over the newer resume"
        assert await handle.result() == "completed"
    step1, step2 = (at for *_, at in fakes.actions)
    assert step2 - step1 < timedelta(hours=25), "step 2 was held by a stale pause"


@dataclass
class HeldWhileResumed(Fakes):
    """The first send reads the campaign paused (status version 1) and answers HELD only after
    the resume (version 2) has reached the journey: the answer crosses the resume."""

    reading: asyncio.Event = field(default_factory=asyncio.Event)
    answer: asyncio.Event = field(default_factory=asyncio.Event)
    attempts: int = 0

    @activity.defn(name="send_step")
    async def send_step(self, step: StepInput) -> StepResult:
        self.attempts += 1
        if self.attempts == 1:
            self.reading.set()
            await self.answer.wait()
            return StepResult(StepOutcome.HELD, reason="campaign paused", status_version=1)
        return await super().send_step(step)


async def test_a_held_answer_crossing_a_resume_does_not_pause_the_journey(
    time_env: WorkflowEnvironment,
) -> None:
    fakes = HeldWhileResumed(plan(step(1, 0)))
    async with journey(time_env, fakes) as handle:
        await asyncio.wait_for(fakes.reading.wait(), 30)
        await handle.signal(RecipientWorkflow.campaign_changed, CampaignChange(ACTIVE, 2))
        fakes.answer.set()
        assert await handle.result() == "completed"
        start = (await handle.describe()).start_time
    assert fakes.attempts == 2
    (sent_at,) = (at for *_, at in fakes.actions)
    # Without the versions the journey waited for the status re-check (24 h in this test).
    assert sent_at - start < timedelta(hours=1), "the journey held on after the resume"


@dataclass
class SentWhilePaused(Fakes):
    """The first send reads the campaign active and answers only after a pause (status version
    2) has reached the journey: the answer crosses the pause."""

    reading: asyncio.Event = field(default_factory=asyncio.Event)
    answer: asyncio.Event = field(default_factory=asyncio.Event)

    @activity.defn(name="send_step")
    async def send_step(self, step: StepInput) -> StepResult:
        if not self.actions:
            self.reading.set()
            await self.answer.wait()
        return await super().send_step(step)


@pytest.mark.parametrize(
    ("version", "kept"),
    [(JourneyVersion.PAUSE_OUTLIVES_SEND, True), (JourneyVersion.CAP_IN_SEND, False)],
    ids=["kept", "older-journeys-as-recorded"],
)
async def test_a_pause_signalled_while_a_send_is_out_outlives_its_answer(
    time_env: WorkflowEnvironment, version: JourneyVersion, kept: bool
) -> None:
    fakes = SentWhilePaused(plan(step(1, 0), step(2, 24)))
    async with journey(time_env, fakes, version=int(version)) as handle:
        await asyncio.wait_for(fakes.reading.wait(), 30)
        await handle.signal(RecipientWorkflow.campaign_changed, CampaignChange(PAUSED, 2))
        fakes.answer.set()

        async def step_1_recorded() -> JourneyState | None:
            state: JourneyState = await handle.query(RecipientWorkflow.progress)
            return state if state.steps else None

        state = await eventually(step_1_recorded, what="step 1's answer")
        assert state.paused is kept
        await time_env.sleep(timedelta(hours=30))  # step 2 fell due 6 h ago
        state = await handle.query(RecipientWorkflow.progress)
        if kept:  # held by the journey itself, until the resume (or the re-check at 48 h)
            assert fakes.decisions() == [(1, "sent")]
            assert state.waiting_for is not None and state.waiting_for.kind == WaitingKind.PAUSED
            await handle.signal(RecipientWorkflow.campaign_changed, CampaignChange(ACTIVE, 3))
        else:  # its fake database says active: the older journey sent step 2 at 24 h
            assert fakes.decisions() == [(1, "sent"), (2, "sent")]
        assert await handle.result() == "completed"
    assert fakes.decisions() == [(1, "sent"), (2, "sent")]
