"""The production worker runs journeys unsandboxed (worker.journey_runner, DRIP_WORKFLOW_SANDBOX);
every other test and replay runs them in the isolated sandbox. Under the production runner and
the passthrough one too, every recorded history replays and an unpatched change still fails."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.workflow import NondeterminismError

from settings import Settings
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

RUNNERS = ["unsandboxed", "passthrough"]


def test_the_production_worker_runs_unsandboxed_and_tests_run_isolated() -> None:
    assert Settings().workflow_sandbox == "unsandboxed"
    assert isinstance(journey_runner("unsandboxed"), UnsandboxedWorkflowRunner)
    passthrough, isolated = journey_runner("passthrough"), journey_runner("isolated")
    assert isinstance(passthrough, SandboxedWorkflowRunner)
    assert isinstance(isolated, SandboxedWorkflowRunner)
    assert set(JOURNEY_MODULES) <= passthrough.restrictions.passthrough_modules
    assert not set(JOURNEY_MODULES) & isolated.restrictions.passthrough_modules


@pytest.mark.parametrize("mode", RUNNERS)
@pytest.mark.parametrize("path", FILES, ids=IDS)
async def test_history_replays_under_the_production_runners(path: Path, mode: str) -> None:
    history = load(path)
    workflow = workflow_classes()[workflow_type(history)]
    await Replayer(workflows=[workflow], workflow_runner=journey_runner(mode)).replay_workflow(
        history
    )


@pytest.mark.parametrize("mode", RUNNERS)
async def test_an_unpatched_change_still_fails_replay(mode: str) -> None:
    with pytest.raises(NondeterminismError):
        await Replayer(
            workflows=[ReorderedRecipientWorkflow], workflow_runner=journey_runner(mode)
        ).replay_workflow(load(HISTORIES / "sent.json"))
