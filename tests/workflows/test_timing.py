"""When a message may go out (JourneyVersion.TIMING), on the time-skipping server: send
windows in the recipient's zone to the minute (the issue's worked example, DST changes in New
York and Berlin, a window crossing midnight, fallback zones, a step's override and opt-out, a
pause across an opening), delay_until dates, and the frequency cap (defer, skip, exempt).

The timing activities are the real ones (activities/timing.py) over a real SQLite database
holding the recipients' fields and the cap; the send and bookkeeping activities are the fakes
of test_recipient.py, which record when each step went out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.timing import TimingActivities
from domain import search
from domain.journey import (
    CampaignChange,
    CampaignStatus,
    DelayUntilPlan,
    JourneyPlan,
    JourneyState,
    JourneyVersion,
    RecipientInput,
    SendWindowPlan,
    StepInput,
    StepOutcome,
    StepPlan,
    StepResult,
    WaitingKind,
)
from services import frequency
from storage.db import make_engine
from storage.models import Campaign, CapSlot, Enrollment
from tests.conftest import migrate
from tests.workflows.test_recipient import HOUR, Fakes
from tests.workflows.test_replay import shape
from workflows.recipient import RecipientWorkflow

NY, BERLIN = ZoneInfo("America/New_York"), ZoneInfo("Europe/Berlin")
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
EVERY_DAY = [*WEEKDAYS, "sat", "sun"]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'timing.db'}"
    migrate(url, "sqlite")
    engine = make_engine(url)
    yield engine
    engine.dispose()


def window(
    days: list[str], start: str, end: str, timezone: str = "recipient", fallback: str = "UTC"
) -> SendWindowPlan:
    return SendWindowPlan(days, start, end, timezone, fallback)


def step(order: int, hours: float = 0, **timing: Any) -> StepPlan:
    return StepPlan(step_id=order * 10, step_order=order, delay_seconds=hours * HOUR, **timing)


def enroll(engine: Engine, fields: dict[str, Any], email: str = "maya@example.net") -> int:
    with Session(engine) as session:
        campaign = session.exec(select(Campaign)).first() or Campaign(name="c", status="active")
        session.add(campaign)
        session.flush()
        enrollment = Enrollment(
            campaign_id=campaign.id or 0, email=email, fields=fields, workflow_id=str(uuid.uuid4())
        )
        session.add(enrollment)
        session.commit()
        return enrollment.id or 0


@dataclass
class CappingFakes(Fakes):
    """The send of CAP_IN_SEND journeys: with on_cap, it first takes the step's slot by the
    real rule (services/frequency.reserve) at the activity's scheduled time (the skipped
    clock), and answers CAPPED when the cap is full, as activities/sending.py does."""

    engine: Engine | None = None
    email: str = "maya@example.net"
    capped: int = 0  # CAPPED answers given

    @activity.defn(name="send_step")
    async def send_step(self, step: StepInput) -> StepResult:
        if step.on_cap is not None:
            assert self.engine is not None
            reservation = frequency.reserve(
                self.engine, email=self.email, enrollment_id=step.enrollment_id,
                step_id=step.step_id, campaign_id=self.plan.campaign_id,
                at=activity.info().scheduled_time, on_cap=step.on_cap,
            )  # fmt: skip
            if not reservation.granted:
                self.capped += 1
                frees = reservation.next_free_at
                return StepResult(
                    StepOutcome.CAPPED, reason=reservation.reason,
                    next_free_at=frees.isoformat() if frees else None,
                )  # fmt: skip
        return await super().send_step(step)


@dataclass
class Run:
    handle: WorkflowHandle
    fakes: Fakes

    async def state(self) -> JourneyState:
        return await self.handle.query(RecipientWorkflow.progress)

    def sent(self) -> list[datetime]:
        """When each step's message went out (the send activity's scheduled time, UTC)."""
        return [at.astimezone(UTC) for _, decision, _, at in self.fakes.actions]


@asynccontextmanager
async def timed(
    env: WorkflowEnvironment,
    engine: Engine,
    journey_plan: JourneyPlan,
    fields: dict[str, Any] | None = None,
    email: str = "maya@example.net",
    version: JourneyVersion = JourneyVersion.TIMING,
) -> AsyncIterator[Run]:
    """A TIMING journey (or a later `version`) for a recipient with `fields`, on its own task
    queues, started now."""
    enrollment_id = enroll(engine, fields or {}, email)
    fakes = (
        CappingFakes(journey_plan, engine=engine, email=email)
        if version >= JourneyVersion.CAP_IN_SEND
        else Fakes(journey_plan)
    )
    timing = TimingActivities(engine)
    queue, send_queue = f"j-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    executor = ThreadPoolExecutor(4)  # the timing activities are sync, as in worker.py
    async with (
        Worker(
            env.client,
            task_queue=queue,
            workflows=[RecipientWorkflow],
            activities=[
                fakes.record_skip,
                fakes.finish_journey,
                fakes.load_tracked_events,
                timing.compute_send_time,
                timing.reserve_cap_slot,
            ],
            activity_executor=executor,
        ),
        Worker(env.client, task_queue=send_queue, activities=[fakes.send_step]),
    ):
        start = await env.get_current_time()
        handle = await env.client.start_workflow(
            RecipientWorkflow.run,
            RecipientInput(
                journey_plan.campaign_id, enrollment_id, email,
                pause_recheck_seconds=24 * HOUR, send_task_queue=send_queue,
                local_bookkeeping=True, plan=journey_plan, version=version,
                enrolled_at=start.isoformat(),
            ),
            id=f"drip-timing-{uuid.uuid4()}",
            task_queue=queue,
        )  # fmt: skip
        yield Run(handle, fakes)
    executor.shutdown()


def plan(*steps: StepPlan, **campaign: Any) -> JourneyPlan:
    return JourneyPlan(campaign_id=1, steps=list(steps), **campaign)


async def skip_to(env: WorkflowEnvironment, moment: datetime) -> None:
    now = await env.get_current_time()
    assert moment > now, f"{moment} is already past ({now})"
    await env.sleep(moment - now)


def next_local(env_now: datetime, zone: ZoneInfo, weekday: int, hh: int, mm: int = 0) -> datetime:
    """The next `weekday` (0 = Monday) at hh:mm in `zone`, at least a day after `env_now`."""
    day = (env_now + timedelta(days=1)).astimezone(zone).date()
    while day.weekday() != weekday:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=zone)


def next_change(env_now: datetime, zone: ZoneInfo, spring: bool) -> datetime:
    """Midnight (local) of the next day whose clocks go forward (`spring`) or back."""
    day = (env_now + timedelta(days=2)).astimezone(zone).date()
    while True:
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=zone)
        before = (noon - timedelta(days=1)).utcoffset()
        after = noon.utcoffset()
        assert before is not None and after is not None
        if (after > before) == spring and after != before:
            return datetime(day.year, day.month, day.day, tzinfo=zone)
        day += timedelta(days=1)


def close_to(actual: datetime, expected: datetime) -> bool:
    """To the minute."""
    return abs(actual - expected) < timedelta(minutes=1)


def local(at: datetime, zone: ZoneInfo) -> str:
    return at.astimezone(zone).strftime("%a %H:%M")


async def finished(handle: WorkflowHandle) -> None:
    for _ in range(400):
        if (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id} did not finish")


async def replays(handle: WorkflowHandle) -> None:
    await Replayer(workflows=[RecipientWorkflow]).replay_workflow(await handle.fetch_history())


async def cap_checks(handle: WorkflowHandle) -> int:
    """The journey's own frequency-cap checks: reserve_cap_slot markers in its history."""
    return shape(await handle.fetch_history()).local_activities.count("reserve_cap_slot")


# --- send windows ----------------------------------------------------------------------------


async def test_the_issues_worked_example_to_the_minute(
    time_env: WorkflowEnvironment, db: Engine
) -> None:
    """Mon-Fri 09:00-17:00 in the recipient's zone; enrolled Monday 18:00 New York time; step 1
    (48 h) due Wednesday 18:00 goes Thursday 09:00; step 2 (48 h after that send) due Saturday
    09:00 goes Monday 09:00."""
    monday = next_local(await time_env.get_current_time(), NY, 0, 18)
    await skip_to(time_env, monday)
    journey_plan = plan(
        step(1, 48), step(2, 48), send_window=window(WEEKDAYS, "09:00", "17:00", fallback="UTC")
    )
    async with timed(time_env, db, journey_plan, {"timezone": "America/New_York"}) as run:
        await skip_to(time_env, monday + timedelta(hours=49))  # Wednesday 19:00
        waiting = (await run.state()).waiting_for
        assert waiting is not None and waiting.kind == WaitingKind.SEND_WINDOW
        assert waiting.zone == "America/New_York" and waiting.step_order == 1
        assert waiting.until is not None
        assert close_to(datetime.fromisoformat(waiting.until), monday + timedelta(hours=63))
        held = await run.handle.describe()
        assert held.typed_search_attributes.get(search.DRIP_HELD) == "send_window"
        assert await run.handle.result() == "completed"
        final = await run.state()
        await replays(run.handle)
    assert final.steps[0].reason == (
        "sent: no condition; inside the send window "
        "(the recipient's timezone field: America/New_York)"
    )
    first, second = run.sent()
    assert local(first, NY) == "Thu 09:00" and close_to(first, monday + timedelta(hours=63))
    assert local(second, NY) == "Mon 09:00"
    assert close_to(second, monday + timedelta(days=7, hours=-9))
    done = await run.handle.describe()
    assert done.typed_search_attributes.get(search.DRIP_HELD) is None


@pytest.mark.parametrize(
    "zone,spring",
    [(NY, True), (NY, False), (BERLIN, True), (BERLIN, False)],
    ids=[
        "new-york-spring-forward",
        "new-york-fall-back",
        "berlin-spring-forward",
        "berlin-fall-back",
    ],  # fmt: skip
)
async def test_across_a_dst_change_the_window_opens_at_its_wall_clock_time(
    time_env: WorkflowEnvironment, db: Engine, zone: ZoneInfo, spring: bool
) -> None:
    """Enrolled at 18:00 the evening before the clocks change: step 1 goes at 09:00 local on
    the day they change, step 2 (12 h later, 21:00) at 09:00 local the day after."""
    change_day = next_change(await time_env.get_current_time(), zone, spring)
    before = change_day.date() - timedelta(days=1)
    evening = datetime(before.year, before.month, before.day, 18, tzinfo=zone)
    await skip_to(time_env, evening)
    journey_plan = plan(
        step(1, 0), step(2, 12), send_window=window(EVERY_DAY, "09:00", "17:00", zone.key)
    )
    async with timed(time_env, db, journey_plan) as run:
        assert await run.handle.result() == "completed"
    first, second = run.sent()
    opens = datetime(change_day.year, change_day.month, change_day.day, 9, tzinfo=zone)
    assert close_to(first, opens), f"{first} is {local(first, zone)} local"
    assert first.astimezone(zone).strftime("%H:%M") == "09:00"
    nxt = change_day + timedelta(days=1)
    assert close_to(second, datetime(nxt.year, nxt.month, nxt.day, 9, tzinfo=zone))
    # an hour off either way is what a fixed offset would have given
    assert first.astimezone(zone).utcoffset() != (evening.utcoffset())


async def test_a_window_crossing_midnight(time_env: WorkflowEnvironment, db: Engine) -> None:
    """Friday 22:00-02:00 Berlin: due Saturday 01:00 goes at once; due Saturday 03:00 waits for
    next Friday 22:00."""
    friday = next_local(await time_env.get_current_time(), BERLIN, 4, 22)
    await skip_to(time_env, friday + timedelta(hours=3))  # Saturday 01:00
    night = window(["fri"], "22:00", "02:00", "Europe/Berlin")
    async with timed(time_env, db, plan(step(1, 0), step(2, 2), send_window=night)) as run:
        assert await run.handle.result() == "completed"
    first, second = run.sent()
    assert close_to(first, friday + timedelta(hours=3))
    assert close_to(second, friday + timedelta(days=7))


@pytest.mark.parametrize(
    "fields,reason",
    [
        ({}, "fallback_timezone Europe/Berlin: the recipient has no timezone field"),
        (
            {"timezone": "Mars/Olympus_Mons"},
            "fallback_timezone Europe/Berlin: the recipient's timezone field "
            "'Mars/Olympus_Mons' is not an IANA zone",
        ),
    ],
    ids=["missing", "invalid"],
)
async def test_the_fallback_zone_for_a_missing_or_invalid_timezone(
    time_env: WorkflowEnvironment, db: Engine, fields: dict[str, Any], reason: str
) -> None:
    """09:00-17:00 in the recipient's zone, falling back to Berlin: a Monday 06:00 UTC due time
    (07:00 Berlin) waits for 09:00 Berlin (08:00 UTC)."""
    monday = next_local(await time_env.get_current_time(), BERLIN, 0, 7)
    await skip_to(time_env, monday)
    journey_plan = plan(
        step(1, 0), send_window=window(EVERY_DAY, "09:00", "17:00", fallback="Europe/Berlin")
    )
    async with timed(time_env, db, journey_plan, fields) as run:
        await skip_to(time_env, monday + timedelta(minutes=30))
        waiting = (await run.state()).waiting_for
        assert waiting is not None and waiting.zone == "Europe/Berlin"
        assert reason in waiting.reason
        assert await run.handle.result() == "completed"
    assert close_to(run.sent()[0], monday + timedelta(hours=2))


async def test_a_steps_own_window_and_a_step_that_ignores_windows(
    time_env: WorkflowEnvironment, db: Engine
) -> None:
    """Campaign window 09:00-10:00 New York; step 1 has its own (20:00-21:00), step 2 ignores
    windows, step 3 uses the campaign's. Enrolled 12:00 New York."""
    noon = next_local(await time_env.get_current_time(), NY, 1, 12)
    await skip_to(time_env, noon)
    journey_plan = plan(
        step(1, 0, send_window=window(EVERY_DAY, "20:00", "21:00", "America/New_York")),
        step(2, 1, ignore_send_window=True),
        step(3, 0),
        send_window=window(EVERY_DAY, "09:00", "10:00", "America/New_York"),
    )
    async with timed(time_env, db, journey_plan) as run:
        assert await run.handle.result() == "completed"
    first, second, third = run.sent()
    assert local(first, NY) == local(noon + timedelta(hours=8), NY)  # 20:00 that day
    assert close_to(second, first + timedelta(hours=1))  # 21:00: outside every window
    assert close_to(third, noon + timedelta(hours=21))  # the campaign's 09:00 next day


async def test_a_pause_across_the_opening_sends_at_resume_only_if_open(
    time_env: WorkflowEnvironment, db: Engine
) -> None:
    """Due 18:00 outside 09:00-17:00 (Berlin); paused before 09:00. Resumed at 10:00 (open):
    sent at 10:00. A second journey resumed at 18:00 (closed): sent at 09:00 the next day."""
    evening = next_local(await time_env.get_current_time(), BERLIN, 2, 18)
    await skip_to(time_env, evening)
    journey_plan = plan(
        step(1, 0), send_window=window(EVERY_DAY, "09:00", "17:00", "Europe/Berlin")
    )
    async with (
        timed(time_env, db, journey_plan, email="open@example.net") as opened,
        timed(time_env, db, journey_plan, email="closed@example.net") as closed,
    ):
        await skip_to(time_env, evening + timedelta(hours=14))  # 08:00
        for run in (opened, closed):
            run.fakes.held = True
            await run.handle.signal(
                RecipientWorkflow.campaign_changed, CampaignChange(CampaignStatus.PAUSED, 1)
            )
        await skip_to(time_env, evening + timedelta(hours=16))  # 10:00: open
        opened.fakes.held = False
        await opened.handle.signal(
            RecipientWorkflow.campaign_changed, CampaignChange(CampaignStatus.ACTIVE, 2)
        )
        # Not result(): awaiting it lets the server skip time, to the other journey's timers.
        await finished(opened.handle)
        assert (await closed.state()).paused
        await skip_to(time_env, evening + timedelta(hours=24))  # 18:00: closed
        closed.fakes.held = False
        await closed.handle.signal(
            RecipientWorkflow.campaign_changed, CampaignChange(CampaignStatus.ACTIVE, 2)
        )
        assert await closed.handle.result() == "completed"
        await replays(closed.handle)
    assert close_to(opened.sent()[0], evening + timedelta(hours=16))
    assert close_to(closed.sent()[0], evening + timedelta(hours=39))  # 09:00 next day


# --- delay until a date ----------------------------------------------------------------------


async def test_delay_until_a_date_in_the_future_in_the_past_and_missing(
    time_env: WorkflowEnvironment, db: Engine
) -> None:
    now = await time_env.get_current_time()
    trial_ends = (now + timedelta(days=5)).astimezone(NY)
    journey_plan = plan(
        step(1, 0, delay_until=DelayUntilPlan("signed_up_at")),  # past: due now
        step(2, 0, delay_until=DelayUntilPlan("trial_ends_at", -24)),  # a day before
        step(3, 0, delay_until=DelayUntilPlan("renews_at")),  # missing: skipped
        step(4, 1),
    )
    fields = {
        "timezone": "America/New_York",
        "signed_up_at": "2020-01-01",
        # naive: read in the recipient's zone
        "trial_ends_at": trial_ends.replace(tzinfo=None).isoformat(timespec="seconds"),
    }
    async with timed(time_env, db, journey_plan, fields) as run:
        await skip_to(time_env, now + timedelta(days=1))
        waiting = (await run.state()).waiting_for
        assert waiting is not None and waiting.kind == WaitingKind.DATE
        assert waiting.zone == "America/New_York" and waiting.step_order == 2
        assert waiting.reason.endswith("due at trial_ends_at - 24 h")
        assert await run.handle.result() == "completed"
        final = await run.state()
        await replays(run.handle)
    decisions = run.fakes.decisions()
    assert decisions == [(1, "sent"), (2, "sent"), (3, "skipped"), (4, "sent")]
    first, second, skipped, fourth = [at.astimezone(UTC) for *_, at in run.fakes.actions]
    assert first - now < timedelta(minutes=1)
    assert close_to(second, trial_ends.replace(microsecond=0) - timedelta(days=1))
    assert final.steps[2].reason == "skipped: the field renews_at is missing"
    # later delays count from the step before: the skip, decided at step 2's send
    assert close_to(fourth, second + timedelta(hours=1))


async def test_a_changed_timezone_counts_from_the_next_step(
    time_env: WorkflowEnvironment, db: Engine
) -> None:
    """The recipient moves from New York to Berlin mid-journey: step 2's window is Berlin's."""
    monday = next_local(await time_env.get_current_time(), NY, 0, 10)  # 16:00 Berlin
    await skip_to(time_env, monday)
    journey_plan = plan(
        step(1, 0), step(2, 2), send_window=window(EVERY_DAY, "09:00", "17:00", fallback="UTC")
    )
    async with timed(time_env, db, journey_plan, {"timezone": "America/New_York"}) as run:
        await skip_to(time_env, monday + timedelta(minutes=30))
        with Session(db) as session:
            enrollment = session.exec(select(Enrollment)).one()
            enrollment.fields = {"timezone": "Europe/Berlin"}
            session.add(enrollment)
            session.commit()
        assert await run.handle.result() == "completed"
    first, second = run.sent()
    assert close_to(first, monday)
    # due 12:00 New York = 18:00 Berlin, after Berlin's 17:00: 09:00 Berlin the next day
    tomorrow = (monday + timedelta(days=1)).astimezone(BERLIN)
    assert close_to(second, tomorrow.replace(hour=9, minute=0))


# --- the frequency cap -----------------------------------------------------------------------


CAP_VERSIONS = pytest.mark.parametrize(
    "version", [JourneyVersion.TIMING, JourneyVersion.CAP_IN_SEND], ids=["journey", "send"]
)  # the slot taken by the journey's local activity, or (CAP_IN_SEND on) by the send


@CAP_VERSIONS
async def test_the_cap_defers_a_step_until_a_slot_frees_then_later_delays_count_from_it(
    time_env: WorkflowEnvironment, db: Engine, version: JourneyVersion
) -> None:
    with Session(db) as session:
        frequency.set_cap(session, 1, 24)
    now = await time_env.get_current_time()
    frequency.reserve(
        db, email="maya@example.net", enrollment_id=999, step_id=1, campaign_id=2, at=now
    )  # another campaign's message, just now
    async with timed(time_env, db, plan(step(1, 1), step(2, 1)), version=version) as run:
        await skip_to(time_env, now + timedelta(hours=2))
        waiting = (await run.state()).waiting_for
        assert waiting is not None and waiting.kind == WaitingKind.FREQUENCY_CAP
        assert waiting.until is not None
        assert close_to(datetime.fromisoformat(waiting.until), now + timedelta(hours=24))
        held = await run.handle.describe()
        assert held.typed_search_attributes.get(search.DRIP_HELD) == "frequency_cap"
        assert await run.handle.result() == "completed"
        await replays(run.handle)
        checks = await cap_checks(run.handle)
    # Each step refused once, then granted: by the journey's own checks, or by the send.
    if version == JourneyVersion.TIMING:
        assert checks == 4
    else:
        assert checks == 0 and isinstance(run.fakes, CappingFakes) and run.fakes.capped == 2
    first, second = run.sent()
    assert close_to(first, now + timedelta(hours=24))  # when the slot freed
    # step 2 (1 h after step 1's send) is held again: one per 24 h
    assert close_to(second, first + timedelta(hours=24))


@CAP_VERSIONS
async def test_the_cap_skips_a_step_with_on_cap_skip(
    time_env: WorkflowEnvironment, db: Engine, version: JourneyVersion
) -> None:
    with Session(db) as session:
        frequency.set_cap(session, 1, 24)
    journey_plan = plan(step(1, 0), step(2, 1), on_cap="skip")
    async with timed(time_env, db, journey_plan, version=version) as run:
        assert await run.handle.result() == "completed"
        final = await run.state()
    assert run.fakes.decisions() == [(1, "sent"), (2, "skipped")]
    assert final.steps[1].reason is not None
    assert final.steps[1].reason.startswith("skipped: frequency_cap (1 of 1 messages in 24 h")


@CAP_VERSIONS
async def test_an_exempt_campaign_is_never_blocked_nor_counted(
    time_env: WorkflowEnvironment, db: Engine, version: JourneyVersion
) -> None:
    with Session(db) as session:
        frequency.set_cap(session, 1, 24)
    async with timed(
        time_env, db, plan(step(1, 0), step(2, 1), step(3, 1), frequency_cap="exempt"),
        version=version,
    ) as run:  # fmt: skip
        assert await run.handle.result() == "completed"
    first, _, third = run.sent()
    assert third - first < timedelta(hours=2, minutes=1)  # never held
    with Session(db) as session:
        assert session.exec(select(CapSlot)).all() == []  # never counted
