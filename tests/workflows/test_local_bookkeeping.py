"""Journeys started on today's code run their database bookkeeping (load_plan, record_skip,
finish_journey) as local activities: no activity task goes through the server for them, only
the sends do (docs/performance.md). Their histories replay; older histories, which scheduled
the bookkeeping as activities, are covered by test_replay.py."""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from domain.journey import ConditionPlan
from tests.workflows.test_recipient import Fakes, journey, plan, step
from workflows.recipient import RecipientWorkflow


async def test_only_sends_are_scheduled_activities_and_the_history_replays(
    time_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(plan(step(1, 0), step(2, 24, ConditionPlan("opened", 10))))  # 2 is skipped
    async with journey(time_env, fakes) as handle:
        assert await handle.result() == "completed"
    assert fakes.decisions() == [(1, "sent"), (2, "skipped")]
    history = await handle.fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled == ["send_step"]
    markers = [
        e.marker_recorded_event_attributes.marker_name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]
    assert markers.count("core_local_activity") == 3  # load_plan, record_skip, finish_journey
    await Replayer(workflows=[RecipientWorkflow]).replay_workflow(history)
