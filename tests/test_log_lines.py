"""Every line our processes log is JSON from the first one: `make run`'s supervisor
(devstack.py, with its migrations), the API under uvicorn (its startup lines included) and the
worker, as operators start them. A log shipper reads them without a second parser."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_devstack_api_and_worker_log_only_json(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DRIP_", "OTEL_"))},
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "DRIP_VAR_DIR": str(tmp_path / "var"),
        "DRIP_DATABASE_URL": f"sqlite:///{tmp_path / 'drip.db'}",
        "DRIP_API_PORT": str(port),
        "DRIP_TASK_QUEUE": f"logs-{port}",
        "DRIP_SEND_TASK_QUEUE": f"logs-send-{port}",
    }
    log = tmp_path / "devstack.log"
    with log.open("wb") as out:
        supervisor = subprocess.Popen(
            [sys.executable, "devstack.py"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        wanted = ("drip is running", "Application startup complete", "worker polling")
        deadline = time.monotonic() + 90
        while not all(w in log.read_text() for w in wanted):
            assert supervisor.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(90)
    lines = log.read_text().splitlines()
    not_json = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            not_json.append(line)
            continue
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
    assert not not_json, "\n".join(not_json[:10])
    loggers = {json.loads(line)["logger"] for line in lines}
    # The supervisor, alembic's migration, uvicorn's startup and the worker all spoke.
    assert {"drip.devstack", "alembic.runtime.migration", "uvicorn.error", "drip.worker"} <= (
        loggers
    ), loggers
