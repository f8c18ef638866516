"""`RecipientInput.version` says which code path a journey runs. Inputs recorded before the
field existed lack it: their version is inferred from the fields that said it then
(`local_bookkeeping`, a plan or none), so every recorded journey keeps its meaning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.converter import DataConverter

from domain.journey import (
    CURRENT_JOURNEY_VERSION,
    JourneyPlan,
    JourneyVersion,
    RecipientInput,
    StepPlan,
)
from tests.workflows.test_replay import FILES, IDS, load, workflow_type

PLAN = JourneyPlan(1, [StepPlan(10, 1, 0.0)])


def decoded(payload: dict[str, object]) -> RecipientInput:
    """An input as the worker's data converter reads it from a history (missing fields take
    their defaults, unknown ones are dropped)."""
    converter = DataConverter.default.payload_converter
    [encoded] = converter.to_payloads([payload])
    [value] = converter.from_payloads([encoded], [RecipientInput])
    return value


def test_inputs_without_a_version_are_inferred_from_the_old_fields() -> None:
    old = {"campaign_id": 1, "enrollment_id": 2, "email": "a@example.com"}
    assert decoded(old).journey_version() == JourneyVersion.SCHEDULED_BOOKKEEPING
    local = {**old, "local_bookkeeping": True}
    assert decoded(local).journey_version() == JourneyVersion.LOCAL_BOOKKEEPING
    pinned = {**local, "plan": {"campaign_id": 1, "steps": [{"step_id": 10, "step_order": 1,
                                                              "delay_seconds": 0.0}]}}  # fmt: skip
    assert decoded(pinned).journey_version() == JourneyVersion.PINNED_PLAN
    explicit = {**old, "version": int(JourneyVersion.LOCAL_BOOKKEEPING)}
    assert decoded(explicit).journey_version() == JourneyVersion.LOCAL_BOOKKEEPING


def test_an_explicit_version_wins_and_unknown_keys_are_dropped() -> None:
    newer = {"campaign_id": 1, "enrollment_id": 2, "email": "a@example.com",
             "version": int(CURRENT_JOURNEY_VERSION),
             "some_future_field": True}  # fmt: skip
    assert decoded(newer).journey_version() == CURRENT_JOURNEY_VERSION


RECIPIENT_FILES = [
    (path, id_)
    for path, id_ in zip(FILES, IDS, strict=True)
    if workflow_type(load(path)) == "RecipientWorkflow"
]


@pytest.mark.parametrize(
    "path", [p for p, _ in RECIPIENT_FILES], ids=[i for _, i in RECIPIENT_FILES]
)
def test_every_recorded_journey_ran_the_path_its_version_names(path: Path) -> None:
    history = load(path)
    started = history.events[0].workflow_execution_started_event_attributes
    [payload] = started.input.payloads
    version = decoded(json.loads(payload.data)).journey_version()
    scheduled = {
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    local = version >= JourneyVersion.LOCAL_BOOKKEEPING
    assert ("finish_journey" in scheduled) is not local, (version, scheduled)
    if version >= JourneyVersion.PINNED_PLAN:
        assert "load_plan" not in scheduled


def test_journeys_started_today_are_recorded_with_their_version() -> None:
    """The recorder (make record-histories) writes the current version into new histories."""
    from tests.workflows.test_replay import HISTORIES

    started = load(HISTORIES / "sent.json").events[0].workflow_execution_started_event_attributes
    [payload] = started.input.payloads
    assert json.loads(payload.data)["version"] == CURRENT_JOURNEY_VERSION
