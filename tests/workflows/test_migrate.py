"""Publishing a campaign version while journeys run (JourneyVersion.VERSIONS), on the
time-skipping server: `migrate` switches a journey at its next step boundary to the new
version's plan (read by load_version_plan), `exit` ends it, and older versions are not news.
Activities are fakes under the real names; the workflow is the real one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain import search
from domain.journey import (
    CampaignChange,
    CampaignStatus,
    CapAnswer,
    CapRequest,
    ConditionPlan,
    FinishInput,
    JourneyPlan,
    JourneyVersion,
    ProductEvent,
    RecipientInput,
    SendTimeAnswer,
    SendTimeQuery,
    SendWindowPlan,
    StepInput,
    StepOutcome,
    StepPlan,
    StepResult,
    TrackedEventsQuery,
)
from domain.versions import VersionChange, VersionPlanQuery, VersionPolicy
from workflows.recipient import RecipientWorkflow

HOUR = 3600.0
ACTIVE, PAUSED = CampaignStatus.ACTIVE, CampaignStatus.PAUSED


def step(
    step_id: int, order: int, hours: float, condition: ConditionPlan | None = None
) -> StepPlan:
    return StepPlan(step_id, order, hours * HOUR, condition=condition)


def version(number: int, *steps: StepPlan) -> JourneyPlan:
    return JourneyPlan(campaign_id=1, steps=list(steps), frequency_cap="exempt", version=number)


@dataclass
class Campaign:
    """The versions a journey can be told of, and what it did."""

    versions: dict[int, JourneyPlan]
    sent: list[tuple[int, int, datetime]] = field(default_factory=list)  # step id, version, at
    loaded: list[int] = field(default_factory=list)
    finished: list[FinishInput] = field(default_factory=list)
    paused: bool = False  # the campaign's status as the send reads it
    live: int = 0  # the version the enrollment row is on, as the send reads it (0: as told)
    switches: list[int] = field(default_factory=list)  # step ids answered SWITCH

    @activity.defn(name="send_step")
    async def send_step(self, step: StepInput) -> StepResult:
        if self.paused:
            return StepResult(StepOutcome.HELD, reason="campaign paused", status_version=1)
        if step.switchable and self.live > step.campaign_version:
            self.switches.append(step.step_id)
            return StepResult(StepOutcome.SWITCH, campaign_version=self.live)
        self.sent.append((step.step_id, step.campaign_version, activity.info().scheduled_time))
        return StepResult(StepOutcome.DONE, delivery_id=f"d{step.step_id}")

    @activity.defn(name="record_skip")
    async def record_skip(self, step: StepInput) -> StepResult:
        return StepResult(StepOutcome.DONE, delivery_id=f"d{step.step_id}")

    @activity.defn(name="finish_journey")
    async def finish_journey(self, finish: FinishInput) -> None:
        self.finished.append(finish)

    @activity.defn(name="load_tracked_events")
    async def load_tracked_events(self, query: TrackedEventsQuery) -> list[ProductEvent]:
        return []

    @activity.defn(name="load_version_plan")
    async def load_version_plan(self, query: VersionPlanQuery) -> JourneyPlan:
        self.loaded.append(query.version)
        return self.versions[query.version]

    def steps(self) -> list[tuple[int, int]]:
        return [(step_id, number) for step_id, number, _ in self.sent]

    def at(self, step_id: int) -> datetime:
        return next(at for sent, _, at in self.sent if sent == step_id)

    def hours(self, earlier: int, later: int) -> float:
        """Hours between two steps' sends, to the minute."""
        return round((self.at(later) - self.at(earlier)).total_seconds() / 60) / 60


@asynccontextmanager
async def journey(
    env: WorkflowEnvironment,
    campaign: Campaign,
    journey_version: JourneyVersion = JourneyVersion.VERSIONS,
) -> AsyncIterator[WorkflowHandle]:
    queue, send_queue = f"j-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    timing = (
        [campaign.compute_send_time, campaign.reserve_cap_slot]
        if isinstance(campaign, Held)
        else []
    )
    async with (
        Worker(
            env.client,
            task_queue=queue,
            workflows=[RecipientWorkflow],
            activities=[
                campaign.record_skip,
                campaign.finish_journey,
                campaign.load_tracked_events,
                campaign.load_version_plan,
                *timing,
            ],
        ),  # fmt: skip
        Worker(env.client, task_queue=send_queue, activities=[campaign.send_step]),
    ):
        yield await env.client.start_workflow(
            RecipientWorkflow.run,
            RecipientInput(
                1,
                1,
                "maya@example.net",
                pause_recheck_seconds=6 * HOUR,
                send_task_queue=send_queue,
                local_bookkeeping=True,
                plan=campaign.versions[1],
                version=journey_version,
            ),  # fmt: skip
            id=f"drip-test-{uuid.uuid4()}",
            task_queue=queue,
        )


async def publish(handle: WorkflowHandle, number: int, policy: VersionPolicy) -> None:
    await handle.signal(RecipientWorkflow.version_published, VersionChange(number, policy))


V1 = version(1, step(10, 1, 0), step(20, 2, 24), step(30, 3, 24))


async def test_migrate_sends_the_next_surviving_step_never_the_removed_one_then_the_new(
    time_env: WorkflowEnvironment,
) -> None:
    v2 = version(2, step(10, 1, 0), step(30, 2, 24), step(40, 3, 24))  # 20 removed, 40 added
    campaign = Campaign({1: V1, 2: v2})
    async with journey(time_env, campaign) as handle:
        await time_env.sleep(timedelta(hours=1))  # step 10 sent; waiting before step 20
        await publish(handle, 2, VersionPolicy.MIGRATE)
        assert await handle.result() == "completed"
        state = await handle.query(RecipientWorkflow.progress)
    assert campaign.steps() == [(10, 1), (30, 2), (40, 2)]
    assert campaign.loaded == [2]
    # 30's delay (24 h) counted from the last step sent, 10.
    assert (campaign.hours(10, 30), campaign.hours(30, 40)) == (24, 24)
    assert state.campaign_version == 2
    described = await handle.describe()
    assert described.typed_search_attributes.get(search.CAMPAIGN_VERSION) == 2


async def test_a_migrate_found_by_the_send_before_its_signal_switches_first(
    time_env: WorkflowEnvironment,
) -> None:
    """From STEP_AND_VERSION_IN_DATABASE on: the batch signal has not reached the journey when
    its step falls due, but the enrollment is on version 2. The send answers SWITCH: the journey
    loads version 2 and sends its step instead; the removed step never goes out. A journey
    started before (VERSIONS) is never asked, and sends its plan's step."""
    v2 = version(2, step(10, 1, 0), step(30, 2, 24), step(40, 3, 24))  # 20 removed, 40 added
    campaign = Campaign({1: V1, 2: v2})
    async with journey(time_env, campaign, JourneyVersion.STEP_AND_VERSION_IN_DATABASE) as handle:
        await time_env.sleep(timedelta(hours=1))  # step 10 sent; waiting before step 20
        campaign.live = 2  # published with migrate; no signal reaches it
        assert await handle.result() == "completed"
        state = await handle.query(RecipientWorkflow.progress)
    assert campaign.switches == [20]
    assert campaign.steps() == [(10, 1), (30, 2), (40, 2)]
    assert campaign.loaded == [2] and state.campaign_version == 2
    assert campaign.hours(10, 30) == 24, "due when 20 was: version 2's 24 h from step 10"
    older = Campaign({1: V1, 2: v2}, live=2)
    async with journey(time_env, older) as handle:
        assert await handle.result() == "completed"
    assert older.switches == [] and older.steps() == [(10, 1), (20, 1), (30, 1)]


async def test_migrate_sends_an_edited_step_with_the_new_versions_content(
    time_env: WorkflowEnvironment,
) -> None:
    v2 = version(2, step(10, 1, 0), step(20, 2, 24), step(30, 3, 24))  # 20 edited in place
    campaign = Campaign({1: V1, 2: v2})
    async with journey(time_env, campaign) as handle:
        await time_env.sleep(timedelta(hours=1))
        await publish(handle, 2, VersionPolicy.MIGRATE)
        assert await handle.result() == "completed"
    assert campaign.steps() == [(10, 1), (20, 2), (30, 2)]  # the send reads version 2's


async def test_migrate_a_shortened_delay_already_elapsed_sends_at_once(
    time_env: WorkflowEnvironment,
) -> None:
    v1 = version(1, step(10, 1, 0), step(20, 2, 48))
    v2 = version(2, step(10, 1, 0), step(20, 2, 24))
    campaign = Campaign({1: v1, 2: v2})
    async with journey(time_env, campaign) as handle:
        await time_env.sleep(timedelta(hours=30))  # past the new 24 h, before the old 48 h
        assert campaign.steps() == [(10, 1)]
        await publish(handle, 2, VersionPolicy.MIGRATE)
        assert await handle.result() == "completed"
    assert campaign.steps() == [(10, 1), (20, 2)]
    assert campaign.hours(10, 20) == 30  # at once, as it heard of version 2


async def test_migrate_a_lengthened_delay_waits_the_new_length(
    time_env: WorkflowEnvironment,
) -> None:
    v2 = version(2, step(10, 1, 0), step(20, 2, 72), step(30, 3, 24))
    campaign = Campaign({1: V1, 2: v2})
    async with journey(time_env, campaign) as handle:
        await time_env.sleep(timedelta(hours=12))
        await publish(handle, 2, VersionPolicy.MIGRATE)
        assert await handle.result() == "completed"
    assert campaign.steps() == [(10, 1), (20, 2), (30, 2)]
    assert campaign.hours(10, 20) == 72


async def test_migrate_during_a_wait_until_decides_under_the_new_step(
    time_env: WorkflowEnvironment,
) -> None:
    waits = ConditionPlan("opened", 10, wait_seconds=48 * HOUR)
    v1 = version(1, step(10, 1, 0), step(20, 2, 1, waits))
    v2 = version(2, step(10, 1, 0), step(20, 2, 1))  # the condition dropped
    campaign = Campaign({1: v1, 2: v2})
    async with journey(time_env, campaign) as handle:
        await time_env.sleep(timedelta(hours=5))  # waiting for an open of 10
        await publish(handle, 2, VersionPolicy.MIGRATE)
        assert await handle.result() == "completed"
    assert campaign.steps() == [(10, 1), (20, 2)]
    assert campaign.hours(10, 20) == 5  # at once, not after the 48 h wait


async def test_exit_ends_the_journey_exited(time_env: WorkflowEnvironment) -> None:
    campaign = Campaign({1: V1})
    async with journey(time_env, campaign) as handle:
        await time_env.sleep(timedelta(hours=1))
        await publish(handle, 2, VersionPolicy.EXIT)
        assert await handle.result() == "exited"
    assert campaign.steps() == [(10, 1)]
    assert [(f.status, f.reason) for f in campaign.finished] == [("exited", "version 2 published")]


async def test_a_version_no_newer_than_the_journeys_own_is_not_news(
    time_env: WorkflowEnvironment,
) -> None:
    campaign = Campaign({1: V1})
    async with journey(time_env, campaign) as handle:
        await time_env.sleep(timedelta(hours=1))
        await publish(handle, 1, VersionPolicy.EXIT)
        await publish(handle, 1, VersionPolicy.MIGRATE)
        assert await handle.result() == "completed"
    assert campaign.steps() == [(10, 1), (20, 1), (30, 1)]  # stay: the plan it started on
    assert campaign.loaded == []


async def test_migrate_while_held_by_a_pause_holds_the_new_versions_step_instead(
    time_env: WorkflowEnvironment,
) -> None:
    v2 = version(2, step(10, 1, 0), step(30, 2, 24))  # 20 removed
    campaign = Campaign({1: V1, 2: v2})
    async with journey(time_env, campaign) as handle:
        await time_env.sleep(timedelta(hours=1))
        campaign.paused = True
        await handle.signal(RecipientWorkflow.campaign_changed, CampaignChange(PAUSED, 1))
        await time_env.sleep(timedelta(hours=29))  # step 20 fell due at 24 h: held
        assert campaign.steps() == [(10, 1)]
        await publish(handle, 2, VersionPolicy.MIGRATE)
        await time_env.sleep(timedelta(hours=1))
        assert campaign.steps() == [(10, 1)]  # still paused: now step 30 is held
        campaign.paused = False
        await handle.signal(RecipientWorkflow.campaign_changed, CampaignChange(ACTIVE, 2))
        assert await handle.result() == "completed"
    assert campaign.steps() == [(10, 1), (30, 2)]  # never the removed step 20
    assert campaign.hours(10, 30) == 31  # sent as the campaign resumed


# --- a version arriving while a decided step is held by its send window or the cap ----------
OPENINGS = (0.0, 34.0)  # hours after the start at which the send window opens (for an hour)


@dataclass
class Held(Campaign):
    """A campaign whose sends wait for a window (open 0-1 h and 34-35 h after `t0`), or whose
    cap frees its slot only at 34 h after `t0` for every step but the first."""

    t0: datetime = datetime.min
    by_cap: bool = False

    def _after(self, at: datetime) -> datetime:
        hours = (at - self.t0).total_seconds() / HOUR
        for start in OPENINGS:
            if hours < start + 1:
                return max(at, self.t0 + timedelta(hours=start))
        return at

    @activity.defn(name="compute_send_time")
    async def compute_send_time(self, query: SendTimeQuery) -> SendTimeAnswer:
        at = datetime.fromisoformat(query.at)
        opening = self._after(at)
        words = "inside the send window" if opening == at else "held for its send window"
        return SendTimeAnswer(opening.isoformat(), words, "UTC")

    @activity.defn(name="reserve_cap_slot")
    async def reserve_cap_slot(self, request: CapRequest) -> CapAnswer:
        at = datetime.fromisoformat(request.at)
        frees = self.t0 + timedelta(hours=OPENINGS[1])
        if request.step_id == 10 or at >= frees:
            return CapAnswer(True, "a slot is free")
        return CapAnswer(False, "1 message per 48 h", frees.isoformat())


def held_version(number: int, by_cap: bool, *steps: StepPlan) -> JourneyPlan:
    plan = version(number, *steps)
    if by_cap:
        plan.frequency_cap = "apply"
    else:
        plan.send_window = SendWindowPlan(["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                          "00:00", "01:00", "UTC")  # fmt: skip
    return plan


@pytest.mark.parametrize("by_cap", [False, True], ids=["send_window", "frequency_cap"])
async def test_migrate_while_held_by_a_window_or_the_cap_takes_the_new_versions_step(
    time_env: WorkflowEnvironment, by_cap: bool
) -> None:
    """Step 20 falls due at 24 h and is held (window or cap) until 34 h; version 2, published
    at 26 h, removes it: the journey drops the held step 20 and sends version 2's step 30
    (due 24 h after step 10, so at once) when the hold ends, at 34 h."""
    steps = (step(10, 1, 0), step(20, 2, 24), step(30, 3, 24))
    v1 = held_version(1, by_cap, *steps)
    v2 = held_version(2, by_cap, step(10, 1, 0), step(30, 2, 24))  # 20 removed
    campaign = Held({1: v1, 2: v2}, t0=await time_env.get_current_time(), by_cap=by_cap)
    async with journey(time_env, campaign) as handle:
        await time_env.sleep(timedelta(hours=26))
        assert campaign.steps() == [(10, 1)]
        waiting = (await handle.query(RecipientWorkflow.progress)).waiting_for
        assert waiting is not None
        assert waiting.kind == ("frequency_cap" if by_cap else "send_window")
        await publish(handle, 2, VersionPolicy.MIGRATE)
        assert await handle.result() == "completed"
    assert campaign.steps() == [(10, 1), (30, 2)]  # never the removed step 20
    assert campaign.hours(10, 30) == OPENINGS[1]  # when the hold ended
