"""A journey whose history grows past DRIP_JOURNEY_HISTORY_ALERT_EVENTS is logged once and
counted on the worker's metrics endpoint (observability/history.py), on the real dev server."""

from __future__ import annotations

import asyncio
import logging
import urllib.request
import uuid

import pytest
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.journey import EngagementSignal, JourneyPlan, RecipientInput, StepPlan
from observability.history import HistoryAlert
from tests.conftest import free_port
from workflows.recipient import RecipientWorkflow

THRESHOLD = 20


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


async def test_a_growing_history_is_logged_once_and_counted(
    dev_env: WorkflowEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    runtime = Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}"))
    )
    target = dev_env.client.service_client.config.target_host
    client = await Client.connect(target, namespace=dev_env.client.namespace, runtime=runtime)
    queue = f"history-{uuid.uuid4()}"
    # A step a day away: the journey only waits, and hears the signals.
    plan = JourneyPlan(campaign_id=1, steps=[StepPlan(10, 1, 24 * 3600.0)])
    caplog.set_level(logging.WARNING, logger="temporalio.workflow")
    async with Worker(
        client,
        task_queue=queue,
        workflows=[RecipientWorkflow],
        interceptors=[HistoryAlert(THRESHOLD)],
    ):
        handle = await client.start_workflow(
            RecipientWorkflow.run,
            RecipientInput(1, 1, "maya@example.net", plan=plan, local_bookkeeping=True),
            id=f"drip-history-{uuid.uuid4()}",
            task_queue=queue,
        )
        for n in range(THRESHOLD * 2):
            await handle.signal(
                RecipientWorkflow.on_event, EngagementSignal(f"e{n}", "open", 10, machine=True)
            )
        assert (await handle.query(RecipientWorkflow.progress)).events_counted == THRESHOLD * 2
        await asyncio.sleep(1)
        text = await asyncio.to_thread(scrape, port)
        await handle.terminate()
    alerts = [r for r in caplog.records if "alert threshold" in r.getMessage()]
    assert len(alerts) == 1, [r.getMessage() for r in caplog.records]
    assert alerts[0].__dict__["history_length"] > THRESHOLD
    assert handle.id in str(alerts[0].__dict__.get("temporal_workflow", ""))
    [sample] = [
        line for line in text.splitlines() if line.startswith("drip_journey_history_alerts")
    ]
    assert sample.endswith(" 1"), sample
