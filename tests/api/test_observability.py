"""Operators' view: Prometheus metrics from the API and the worker, readiness that names the
failed dependency, and JSON log lines that name the journey."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from domain import search
from domain.journey import workflow_id
from settings import Settings
from storage.db import session_scope
from storage.models import Campaign, Delivery, Enrollment, Step, Template
from temporal_client import LOCAL_SERVER_STARTUP
from tests.conftest import BIN, free_port, serve_api, unique_domain
from tests.support.factories import make_campaign, make_template

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """This module's own dev server: the worker test runs `python worker.py`, which polls the
    shared task queue, so it must not meet other modules' journeys (nor leave them its own)."""
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=LOCAL_SERVER_STARTUP,
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=list(search.ALL_KEYS),
        ui=False,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


async def end_journeys(env: WorkflowEnvironment, campaign_id: int, *emails: str) -> None:
    """Journeys enrolled without a worker would wait for the next test's worker, which would
    run them against its own database. End them with the test."""
    for email in emails:
        with contextlib.suppress(RPCError):
            await env.client.get_workflow_handle(workflow_id(campaign_id, email)).terminate()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text; 0 when it is not there (yet)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


async def scrape(api: httpx.AsyncClient) -> str:
    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def one_step_campaign(api: httpx.AsyncClient) -> int:
    template = await make_template(api)
    campaign = await make_campaign(
        api, [{"subject": "Hello", "delay_hours": 0, "template_id": template}]
    )
    return campaign["id"]


async def test_metrics_count_requests_by_route_and_the_apps_own_events(
    api: httpx.AsyncClient, settings: Settings, dev_env: WorkflowEnvironment
) -> None:
    campaign_id = await one_step_campaign(api)
    route = "/api/campaigns/{campaign_id}/recipients"
    before = await scrape(api)

    domain = unique_domain()
    first = await api.post(
        f"/api/campaigns/{campaign_id}/recipients",
        json={"recipients": [{"email": f"a@{domain}"}, {"email": f"b@{domain}"},
                             {"email": "not-an-address"}]},
    )  # fmt: skip
    assert first.status_code == 200, first.text
    again = await api.post(
        f"/api/campaigns/{campaign_id}/recipients", json={"recipients": [{"email": f"a@{domain}"}]}
    )
    assert again.json()["already_enrolled"] == 1
    missing = await api.get("/api/campaigns/999999")
    assert missing.status_code == 404
    await api.get("/no/such/page")

    after = await scrape(api)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    await end_journeys(dev_env, campaign_id, f"a@{domain}", f"b@{domain}")
    assert delta("drip_http_requests_total", method="POST", route=route, status="200") == 2
    assert delta("drip_http_request_duration_seconds_count", method="POST", route=route) == 2
    assert (
        delta("drip_http_requests_total", method="GET", route="/api/campaigns/{campaign_id}",
              status="404") == 1
    )  # fmt: skip
    assert delta("drip_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert delta("drip_enrollments_total", result="enrolled") == 2
    assert delta("drip_enrollments_total", result="already_enrolled") == 1
    assert delta("drip_enrollments_total", result="rejected") == 1

    # Requests refused by the key check (before routing) are counted too, by status.
    keyed = settings.model_copy(update={"api_port": free_port(), "api_keys": ["k"]})
    async with serve_api(keyed, dev_env.client) as locked:
        before = await scrape(locked)
        assert (await locked.get(f"/api/campaigns/{campaign_id}")).status_code == 401
        after = await scrape(locked)
    assert delta("drip_http_requests_total", method="GET", route="unmatched", status="401") == 1


def insert_unsignallable_delivery(engine: Engine) -> str:
    """A delivery whose journey has no workflow id (a corrupt row), so Temporal refuses the
    signal for real, with INVALID_ARGUMENT."""
    with session_scope(engine) as session:
        template = Template(name="t", html="<p>x</p>")
        campaign = Campaign(name="c", status="active")
        session.add_all([template, campaign])
        session.flush()
        step = Step(campaign_id=campaign.id or 0, step_order=1, subject="s",
                    template_id=template.id or 0)  # fmt: skip
        email = f"x@{unique_domain()}"
        enrollment = Enrollment(campaign_id=campaign.id or 0, email=email,
                                workflow_id="", workflow_started=True)  # fmt: skip
        session.add_all([step, enrollment])
        session.flush()
        delivery = Delivery(id=f"snd_{unique_domain()[:10]}", enrollment_id=enrollment.id or 0,
                            campaign_id=campaign.id or 0, step_id=step.id or 0, step_order=1,
                            decision="sent", status="sent")  # fmt: skip
        session.add(delivery)
        return delivery.id


async def test_metrics_count_events_received_and_signal_failures(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    delivery_id = await asyncio.to_thread(insert_unsignallable_delivery, engine)
    before = await scrape(api)
    response = await api.post("/api/events", json={"delivery_id": delivery_id, "type": "open"})
    assert response.status_code == 202, response.text
    after = await scrape(api)
    received = sample(after, "drip_events_received_total", provider="api", type="open")
    assert received - sample(before, "drip_events_received_total", provider="api", type="open") == 1
    failures = sample(after, "drip_signal_failures_total", status="INVALID_ARGUMENT")
    assert failures - sample(before, "drip_signal_failures_total", status="INVALID_ARGUMENT") >= 1


async def test_readyz_when_everything_is_up(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    response = await api.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "temporal": "ok"}}


async def test_readyz_names_an_unreachable_database(
    settings: Settings, dev_env: WorkflowEnvironment
) -> None:
    broken = settings.model_copy(
        update={
            "api_port": free_port(),
            # Production: no migration at start-up, so the app starts and reports instead.
            "env": "production",
            "secret_key": "test-secret",
            "database_url": f"postgresql+psycopg://127.0.0.1:{free_port()}/nowhere",
        }
    )
    async with serve_api(broken, dev_env.client) as http:
        assert (await http.get("/healthz")).status_code == 200  # the process itself is fine
        response = await http.get("/readyz")
    assert response.status_code == 503, response.text
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "unreachable", "temporal": "ok"},
    }


async def test_readyz_names_an_unreachable_temporal(settings: Settings) -> None:
    broken = settings.model_copy(
        update={"api_port": free_port(), "temporal_address": f"127.0.0.1:{free_port()}"}
    )
    async with serve_api(broken, None) as http:  # type: ignore[arg-type]  # the app connects itself
        response = await http.get("/readyz")
    assert response.status_code == 503, response.text
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "temporal": "unreachable"},
    }


def json_lines(text: str) -> list[dict[str, Any]]:
    """The complete JSON lines of a log (the last one may still be being written)."""
    return [json.loads(line) for line in text.splitlines(keepends=True)
            if line.startswith("{") and line.endswith("\n")]  # fmt: skip


async def test_an_enrollment_logs_a_json_line_naming_its_journey(
    api: httpx.AsyncClient, dev_env: WorkflowEnvironment, capsys: Any
) -> None:
    campaign_id = await one_step_campaign(api)
    email = f"maya@{unique_domain()}"
    capsys.readouterr()
    response = await api.post(
        f"/api/campaigns/{campaign_id}/recipients", json={"recipients": [{"email": email}]}
    )
    assert response.json()["enrolled"] == 1
    await end_journeys(dev_env, campaign_id, email)
    lines = json_lines(capsys.readouterr().err)
    assert lines, "no JSON log lines on stderr"
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    [started] = [line for line in lines if line["message"] == "journey started"]
    assert started["workflow_id"] == f"drip-campaign-{campaign_id}-{email}"
    assert started["campaign_id"] == campaign_id
    assert started["recipient"] == email
    assert started["level"] == "INFO" and started["logger"] == "services.journeys"


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


async def test_worker_serves_sdk_and_send_metrics_and_logs_json(
    api: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    """`python worker.py` as operators run it: one Prometheus endpoint with the Temporal SDK's
    metrics and our send counter, and JSON log lines that name the journey."""
    port = free_port()
    env = {
        **os.environ,
        "DRIP_DATABASE_URL": settings.database_url,
        "DRIP_VAR_DIR": str(settings.var_dir),
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "DRIP_WORKER_METRICS_PORT": str(port),
        "DRIP_TASK_QUEUE": settings.task_queue,
        "DRIP_SEND_TASK_QUEUE": settings.send_task_queue,
    }
    log_file = tmp_path / "worker.log"
    with log_file.open("wb") as log:
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "worker.py", cwd=ROOT, env=env, stdout=log, stderr=log
        )
    try:
        campaign_id = await one_step_campaign(api)
        email = f"sam@{unique_domain()}"
        journey_id = workflow_id(campaign_id, email)
        enrolled = await api.post(
            f"/api/campaigns/{campaign_id}/recipients", json={"recipients": [{"email": email}]}
        )
        assert enrolled.json()["enrolled"] == 1
        deadline = time.monotonic() + 90
        mine: list[dict[str, Any]] = []
        while not mine and time.monotonic() < deadline:
            assert worker.returncode is None, log_file.read_text()
            await asyncio.sleep(0.5)
            mine = [
                line
                for line in json_lines(log_file.read_text())
                if line.get("workflow_id") == journey_id and line["message"] == "send sent"
            ]
        assert len(mine) == 1, log_file.read_text()
        text = await asyncio.to_thread(metrics_text, port)
        sent = sample(text, "drip_messages_sent_total", outcome="sent", activity_type="send_step")
        assert sent >= 1, text
        assert any(line.startswith("temporal_") for line in text.splitlines()), text
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(worker.wait(), 30)
        except TimeoutError:
            worker.kill()
            await worker.wait()
    [line] = mine
    assert line["campaign_id"] == campaign_id and line["recipient"] == email
    assert line["activity"] == "send_step" and line["outcome"] == "sent"
    assert line["level"] == "INFO" and line["logger"] == "temporalio.activity"
    assert line["delivery_id"].startswith("snd_")
