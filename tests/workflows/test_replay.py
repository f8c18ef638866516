"""Replay safety: the recorded histories of real journeys (tests/histories, written by
`make record-histories`) must replay against today's workflow code. A change to the workflow's
command sequence that is not gated by `workflow.patched(...)` fails here, before it can break
the journeys already running in production."""

from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

import workflows
from domain.journey import JourneyPlan, RecipientInput
from domain.resend import RESEND_DELIVERY, ResendDelivery, ResendInput
from workflows.resend import ResendWorkflow

HISTORIES = Path(__file__).resolve().parent.parent / "histories"
# The current recording of each branch, plus older ones kept in dated folders (journeys started
# on older code, which today's code must still replay).
FILES = sorted(HISTORIES.rglob("*.json"))
IDS = [str(p.relative_to(HISTORIES).with_suffix("")) for p in FILES]

# The recipient journey's branches that must always have a recorded history, and how each ends.
RECIPIENT_BRANCHES = {
    "sent": "completed",
    "alternative": "completed",
    "skipped": "completed",
    "paused": "completed",
    "unsubscribed": "unsubscribed",
    "bounced_event": "bounced",
    "bounced_smtp": "bounced",
    "removed": "removed",
    "archived": "archived",
    # JourneyVersion.JOURNEYS on
    "wait_until_met": "completed",
    "wait_until_timed_out": "completed",
    "performed": "completed",
    "converted": "converted",
    "triggered": "completed",
    # JourneyVersion.TIMING on
    "window_held": "completed",
    "delay_until": "completed",
    "cap_deferred": "completed",
    "cap_skipped": "completed",
    # JourneyVersion.VERSIONS on
    "migrated": "completed",
    "exited": "exited",
    # JourneyVersion.STEP_AND_VERSION_IN_DATABASE on
    "switched": "completed",
    # JourneyVersion.CAP_IN_SEND on: cap_deferred and cap_skipped, answered `capped` by the send
    # JourneyVersion.PAUSE_OUTLIVES_SEND on
    "paused_while_sending": "completed",
}


def workflow_classes() -> dict[str, type]:
    """Every workflow type defined in the `workflows` package, by its registered name."""
    found: dict[str, type] = {}
    for module_info in pkgutil.iter_modules(workflows.__path__):
        module = importlib.import_module(f"workflows.{module_info.name}")
        for value in vars(module).values():
            definition = getattr(value, "__temporal_workflow_definition", None)
            if isinstance(value, type) and definition is not None:
                found[definition.name] = value
    return found


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def workflow_type(history: WorkflowHistory) -> str:
    return history.events[0].workflow_execution_started_event_attributes.workflow_type.name


@dataclass
class Shape:
    """What a recipient history did: activities with their decisions, signals, the result."""

    activities: list[str]
    signals: list[str]
    result: str | None
    local_activities: list[str]  # by type only: a marker does not record the input
    timers: list[str]  # "fired" or "canceled" (the wait ended by what it waited for), in order
    upserts: list[str]  # the search attributes each upsert set, in order


def shape(history: WorkflowHistory) -> Shape:
    def decode(payloads) -> list:  # type: ignore[no-untyped-def]
        return [json.loads(p.data) for p in payloads]

    activities, signals, result, local, timers, upserts = [], [], None, [], [], []
    for event in history.events:
        if event.HasField("upsert_workflow_search_attributes_event_attributes"):
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            upserts.extend(sorted(fields.indexed_fields))
        if event.HasField("timer_fired_event_attributes"):
            timers.append("fired")
        elif event.HasField("timer_canceled_event_attributes"):
            timers.append("canceled")
        if event.HasField("marker_recorded_event_attributes"):
            details = event.marker_recorded_event_attributes.details
            if "data" in details:
                [data] = decode(details["data"].payloads)
                local.append(data["activity_type"])
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            [arg] = decode(attrs.input.payloads)
            decision = arg.get("decision") if isinstance(arg, dict) else None
            activities.append(
                f"{attrs.activity_type.name}:{decision}" if decision else attrs.activity_type.name
            )
        elif event.HasField("workflow_execution_signaled_event_attributes"):
            signals.append(event.workflow_execution_signaled_event_attributes.signal_name)
        elif event.HasField("workflow_execution_completed_event_attributes"):
            [result] = decode(event.workflow_execution_completed_event_attributes.result.payloads)
    return Shape(activities, signals, result, local, timers, upserts)


def test_every_branch_is_recorded() -> None:
    assert FILES, f"no histories in {HISTORIES}: run `make record-histories`"
    recorded = {p.stem for p in HISTORIES.glob("*.json")}
    missing = set(RECIPIENT_BRANCHES) - recorded
    assert not missing, f"histories missing for {sorted(missing)}: run `make record-histories`"


@pytest.mark.parametrize("path", FILES, ids=IDS)
async def test_history_replays_on_todays_code(path: Path) -> None:
    history = load(path)
    known = workflow_classes()
    name = workflow_type(history)
    assert name in known, f"{path.name} is a {name} history, but no such workflow is defined"
    # Raises on any non-determinism (a command the code no longer issues, or issues differently).
    await Replayer(workflows=[known[name]]).replay_workflow(history)


def test_recorded_histories_are_the_branches_they_are_named_after() -> None:
    """Guards the fixtures themselves: each file really walked its branch."""
    shapes = {stem: shape(load(HISTORIES / f"{stem}.json")) for stem in RECIPIENT_BRANCHES}
    for stem, status in RECIPIENT_BRANCHES.items():
        assert shapes[stem].result == status, stem
    assert shapes["sent"].activities.count("send_step:sent") == 3
    assert shapes["sent"].signals == ["on_event", "on_event"], "an open and a click, while waiting"
    assert "send_step:alternative" in shapes["alternative"].activities
    skipped = shapes["skipped"]
    assert "record_skip:skipped" in skipped.activities or "record_skip" in skipped.local_activities
    paused = shapes["paused"]
    assert paused.signals == ["campaign_changed", "campaign_changed"], "paused, then resumed"
    # Held past due: by the send's HELD answer (the pause was in the database before its signal
    # arrived: the step was re-tried), or by the pause it had heard of (re-checks while held).
    retried, rechecked = (
        paused.activities.count("send_step:sent") > 2,
        paused.timers[1:3] == ["fired", "fired"],
    )
    assert retried or rechecked, "held past due"
    assert paused.activities.count("send_step:sent") >= 2 and paused.timers[-1] == "canceled"
    while_sending = shapes["paused_while_sending"]
    assert while_sending.signals == ["campaign_changed", "campaign_changed"], "paused, resumed"
    # Held past due by the pause it heard (re-checks, the last canceled by the resume), not by a
    # send answering HELD (an older journey's send found the pause in the database).
    assert while_sending.activities == ["send_step:sent", "send_step:sent"]
    timers = while_sending.timers
    assert timers[0] == "fired" and "fired" in timers[1:] and timers[-1] == "canceled"
    events = load(HISTORIES / "paused_while_sending.json").events
    [pause, _] = [i for i, e in enumerate(events)
                  if e.HasField("workflow_execution_signaled_event_attributes")]  # fmt: skip
    sent = [
        i for i, e in enumerate(events) if e.HasField("activity_task_completed_event_attributes")
    ]
    assert pause < sent[0], "the pause reached the journey while step 1's send was out"
    assert shapes["unsubscribed"].signals == ["on_event"]
    assert shapes["bounced_event"].signals == ["on_event"]
    assert shapes["bounced_smtp"].signals == [], "the 550 ended it from the send itself"
    assert shapes["removed"].signals == ["remove"]
    assert shapes["archived"].signals == ["campaign_changed"]
    met = shapes["wait_until_met"]
    assert met.activities == ["send_step:sent", "send_step:sent"] and met.signals == ["on_event"]
    assert met.timers == ["canceled"], "the click ended the wait: step 2 did not wait it out"
    timed_out = shapes["wait_until_timed_out"]
    assert timed_out.activities == ["send_step:sent", "send_step:alternative"]
    assert timed_out.signals == [] and timed_out.timers == ["fired"]
    performed = shapes["performed"]
    assert performed.activities == ["send_step:sent", "send_step:sent"]
    assert performed.signals == ["on_tracked"] and performed.timers == ["canceled"]
    assert "load_tracked_events" in performed.local_activities, "read back when step 2 fell due"
    converted = shapes["converted"]
    assert converted.activities == ["send_step:sent"], "no step after the goal"
    assert converted.signals == ["on_tracked"] and converted.timers == ["canceled"]
    triggered = shapes["triggered"]
    assert triggered.activities == ["send_step:sent"], "this cart's order skipped step 2"
    assert triggered.signals == ["on_tracked", "on_tracked"], "another cart's order, then this"
    assert triggered.timers == ["canceled"] and "record_skip" in triggered.local_activities
    events = load(HISTORIES / "triggered.json").events
    signalled = [i for i, e in enumerate(events)
                 if e.HasField("workflow_execution_signaled_event_attributes")]  # fmt: skip
    canceled = [i for i, e in enumerate(events) if e.HasField("timer_canceled_event_attributes")]
    assert signalled[0] < signalled[1] < canceled[0], "the other cart's order ended the wait"


def test_timing_histories_are_the_branches_they_are_named_after() -> None:
    """Held by a send window (a timer to its opening between two window reads), due at a date
    and skipped for a missing one, deferred by the frequency cap until a slot freed, skipped by
    it. From CAP_IN_SEND on the send takes the cap's slot (a full cap answers `capped`); the
    same branches recorded on STEP_AND_VERSION_IN_DATABASE reserved it first, by a local
    activity before every send."""
    window = shape(load(HISTORIES / "window_held.json"))
    assert window.local_activities[:2] == ["compute_send_time", "compute_send_time"]
    assert window.timers == ["fired"] and window.activities == ["send_step:sent"]
    dated = shape(load(HISTORIES / "delay_until.json"))
    assert dated.local_activities[0] == "compute_send_time" and "record_skip" in (
        dated.local_activities
    )
    assert dated.activities == ["send_step:sent", "send_step:sent"]
    deferred = shape(load(HISTORIES / "cap_deferred.json"))
    assert deferred.activities == ["send_step:sent"] * 3 and deferred.timers == ["fired"]
    assert outcomes("cap_deferred.json") == ["done", "capped", "done"], "refused, then sent"
    skipped = shape(load(HISTORIES / "cap_skipped.json"))
    assert outcomes("cap_skipped.json") == ["done", "capped"]
    assert "record_skip" in skipped.local_activities
    for name in ("sent", "window_held", "cap_deferred", "cap_skipped"):
        assert "reserve_cap_slot" not in shape(load(HISTORIES / f"{name}.json")).local_activities
    older = HISTORIES / "2026-12-01-database-led"
    deferred = shape(load(older / "cap_deferred.json"))
    assert deferred.local_activities.count("reserve_cap_slot") == 3, "refused once, then granted"
    assert deferred.activities == ["send_step:sent", "send_step:sent"]
    skipped = shape(load(older / "cap_skipped.json"))
    assert skipped.activities == ["send_step:sent"] and "record_skip" in skipped.local_activities
    assert shape(load(older / "sent.json")).local_activities.count("reserve_cap_slot") == 3


def outcomes(name: str) -> list[str]:
    """What each send_step of a recorded history answered."""
    return [
        json.loads(e.activity_task_completed_event_attributes.result.payloads[0].data)["outcome"]
        for e in load(HISTORIES / name).events
        if e.HasField("activity_task_completed_event_attributes")
    ]


def test_version_histories_are_the_branches_they_are_named_after() -> None:
    """Migrated: told of a version published with migrate while it waited for a removed step,
    it read the new version's plan (a local activity, kept in the history) and sent the new
    step, never the removed one; exited: told of one published with exit, it ended."""
    migrated = shape(load(HISTORIES / "migrated.json"))
    assert migrated.signals == ["version_published"]
    assert "load_version_plan" in migrated.local_activities
    assert migrated.activities == ["send_step:sent", "send_step:sent"]
    assert migrated.timers[0] == "canceled", "the switch ended the wait for the removed step"
    switched = shape(load(HISTORIES / "switched.json"))  # migrated, but never signalled
    assert switched.signals == [] and switched.local_activities.count("load_version_plan") == 1
    assert switched.activities == ["send_step:sent", "send_step:sent", "send_step:sent"]
    assert outcomes("switched.json") == ["done", "switch", "done"], "step 2 never sent"
    exited = shape(load(HISTORIES / "exited.json"))
    assert exited.signals == ["version_published"]
    assert exited.activities == ["send_step:sent"] and exited.timers == ["canceled"]


def test_the_resend_is_recorded() -> None:
    """An operator's resend (workflows/resend.py), recorded by `python -m
    tools.record_resend_history`: one attempt on the send queue, answered `sent`. Required here:
    the replay of every file above would pass without it."""
    path = HISTORIES / "resent.json"
    assert path.exists(), f"{path.name} missing: run `python -m tools.record_resend_history`"
    history = load(path)
    assert workflow_type(history) == "ResendWorkflow"
    resent = shape(history)
    assert resent.activities == ["resend_delivery"] and resent.result == "sent"
    scheduled = [e.activity_task_scheduled_event_attributes for e in history.events
                 if e.HasField("activity_task_scheduled_event_attributes")]  # fmt: skip
    assert scheduled[0].task_queue.name != workflow_task_queue(history), "on the send queue"


def workflow_task_queue(history: WorkflowHistory) -> str:
    return history.events[0].workflow_execution_started_event_attributes.task_queue.name


def test_journeys_write_their_step_to_visibility_only_before_step_in_database() -> None:
    """From STEP_AND_VERSION_IN_DATABASE on a step's progress is not upserted as DripStep (one visibility
    write per message): the journey upserts its status at the end and nothing per step; the
    same branch recorded on VERSIONS upserted DripStep at each of its three steps."""
    assert shape(load(HISTORIES / "sent.json")).upserts == ["DripStatus"]
    older = shape(load(HISTORIES / "2026-12-01-versions" / "sent.json"))
    assert older.upserts == ["DripStep", "DripStep", "DripStep", "DripStatus"]


# --- the test can fail: a workflow whose first command differs does not replay ---------------


@workflow.defn(name="RecipientWorkflow", sandboxed=False)
class ReorderedRecipientWorkflow:
    """A careless edit of the real workflow: a timer before the plan is loaded."""

    @workflow.run
    async def run(self, input: RecipientInput) -> str:
        await workflow.sleep(timedelta(seconds=1))
        await workflow.execute_activity(
            "load_plan", input.campaign_id, result_type=JourneyPlan,
            start_to_close_timeout=timedelta(seconds=30),
        )  # fmt: skip
        return "completed"

    @workflow.signal
    def on_event(self, event: object) -> None: ...

    @workflow.signal
    def campaign_status(self, status: str) -> None: ...


async def test_an_unpatched_change_fails_replay() -> None:
    with pytest.raises(NondeterminismError):
        await Replayer(workflows=[ReorderedRecipientWorkflow]).replay_workflow(
            load(HISTORIES / "sent.json")
        )


@workflow.defn(name="ResendWorkflow", sandboxed=False)
class ResendAfterAPause:
    """A careless edit of the resend: a second's pause before the attempt."""

    @workflow.run
    async def run(self, input: ResendInput) -> str:
        await workflow.sleep(timedelta(seconds=1))
        status: str = await workflow.execute_activity(
            RESEND_DELIVERY, ResendDelivery(input.delivery_id), result_type=str,
            task_queue=input.send_task_queue, start_to_close_timeout=timedelta(minutes=2),
        )  # fmt: skip
        return status


async def test_the_resend_replays_and_an_unpatched_change_to_it_fails() -> None:
    await Replayer(workflows=[ResendWorkflow]).replay_workflow(load(HISTORIES / "resent.json"))
    with pytest.raises(NondeterminismError):
        await Replayer(workflows=[ResendAfterAPause]).replay_workflow(
            load(HISTORIES / "resent.json")
        )
