"""The production worker passes the workflow modules through its sandbox (worker.journey_runner,
DRIP_WORKFLOW_SANDBOX=passthrough); every other test and replay runs them isolated. Under the
production runner too, every recorded history replays and an unpatched change still fails."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from tests.workflows.test_replay import (
    FILES,
    HISTORIES,
    IDS,
    ReorderedRecipientWorkflow,
    load,
    workflow_classes,
    workflow_type,
)
from worker import JOURNEY_MODULES, journey_runner


def test_only_the_production_worker_passes_the_workflow_modules_through() -> None:
    assert set(JOURNEY_MODULES) <= journey_runner(True).restrictions.passthrough_modules
    assert not set(JOURNEY_MODULES) & journey_runner(False).restrictions.passthrough_modules


@pytest.mark.parametrize("path", FILES, ids=IDS)
async def test_history_replays_under_the_production_runner(path: Path) -> None:
    history = load(path)
    workflow = workflow_classes()[workflow_type(history)]
    await Replayer(workflows=[workflow], workflow_runner=journey_runner(True)).replay_workflow(
        history
    )


async def test_an_unpatched_change_still_fails_replay() -> None:
    with pytest.raises(NondeterminismError):
        await Replayer(
            workflows=[ReorderedRecipientWorkflow], workflow_runner=journey_runner(True)
        ).replay_workflow(load(HISTORIES / "sent.json"))
