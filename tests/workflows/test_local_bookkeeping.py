"""Journeys started with `local_bookkeeping` (every journey the API starts today) run their
database bookkeeping (load_plan, record_skip, finish_journey) as local activities: no activity
task goes through the server for them, only the sends do (docs/performance.md). Their histories
replay; journeys started before, whose input lacks the flag, schedule them as activities (their
recorded histories replay in test_replay.py)."""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from domain.journey import ConditionPlan, JourneyPlan
from tests.workflows.test_recipient import Fakes, journey, plan, step
from workflows.recipient import RecipientWorkflow


async def run_journey(
    env: WorkflowEnvironment, fakes: Fakes, local: bool, plan: JourneyPlan | None = None
) -> WorkflowHistory:
    async with journey(env, fakes, local_bookkeeping=local, plan=plan) as handle:
        assert await handle.result() == "completed"
        return await handle.fetch_history()


def scheduled_activities(history: WorkflowHistory) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


def markers(history: WorkflowHistory) -> list[str]:
    return [
        e.marker_recorded_event_attributes.marker_name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]


async def test_only_sends_are_scheduled_activities_and_the_history_replays(
    time_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24, ConditionPlan("opened", 10))))  # 2 is skipped
    history = await run_journey(time_env, fakes, local=True)
    assert fakes.decisions() == [(1, "sent"), (2, "skipped")]
    assert scheduled_activities(history) == ["send_step"]
    # load_plan, record_skip, finish_journey; and no patch marker (nor its search attribute)
    assert markers(history) == ["core_local_activity"] * 3
    await Replayer(workflows=[RecipientWorkflow]).replay_workflow(history)


async def test_a_journey_started_without_the_flag_schedules_its_bookkeeping(
    time_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24, ConditionPlan("opened", 10))))
    history = await run_journey(time_env, fakes, local=False)
    assert scheduled_activities(history) == [
        "load_plan", "send_step", "record_skip", "finish_journey"
    ]  # fmt: skip
    assert markers(history) == []
    await Replayer(workflows=[RecipientWorkflow]).replay_workflow(history)


async def test_a_journey_started_with_its_plan_does_not_load_it(
    time_env: WorkflowEnvironment,
) -> None:
    pinned = plan(step(1, 0), step(2, 24, ConditionPlan("opened", 10)))
    fakes = Fakes(plan(step(7, 0)))  # what load_plan would answer: must not be asked
    history = await run_journey(time_env, fakes, local=True, plan=pinned)
    assert fakes.decisions() == [(1, "sent"), (2, "skipped")]
    assert scheduled_activities(history) == ["send_step"]
    assert markers(history) == ["core_local_activity"] * 2  # record_skip, finish_journey
    await Replayer(workflows=[RecipientWorkflow]).replay_workflow(history)
