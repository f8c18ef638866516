"""Following one enrollment across processes: an OpenTelemetry trace from the API request to the
SMTP hand-off, and a request id from the API's log lines to the worker's.

Against the real dev server, an in-process worker and the aiosmtpd sink; the spans go to an
in-memory exporter, installed as OTEL_TRACES_EXPORTER would install a real one."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from temporalio.testing import WorkflowEnvironment

from observability import tracing
from settings import Settings
from tests.conftest import run_worker, serve_api, unique_domain
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template
from tools.smtp_sink import SmtpSink

ROOT = Path(__file__).resolve().parents[2]
ENROLL = "POST /api/campaigns/{campaign_id}/recipients"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_tracer_provider(None)


@contextlib.asynccontextmanager
async def running(
    settings: Settings, env: WorkflowEnvironment, smtp: SmtpSink
) -> AsyncIterator[httpx.AsyncClient]:
    """The `system` fixture's stack, built inside the test: after tracing is switched on."""
    configured = settings.model_copy(
        update={"smtp_url": smtp.url, "from_email": "hello@drip.example.com"}
    )
    async with serve_api(configured, env.client) as api, run_worker(configured, env.client):
        yield api


async def one_step_campaign(api: httpx.AsyncClient) -> int:
    template = await make_template(api)
    steps = [{"subject": "Hi", "delay_hours": 0, "template_id": template}]
    campaign = await make_campaign(api, steps, from_email="hello@drip.example.com")
    return campaign["id"]


async def enroll_one(api: httpx.AsyncClient, email: str, **headers: str) -> httpx.Response:
    campaign_id = await one_step_campaign(api)
    response = await api.post(
        f"/api/campaigns/{campaign_id}/recipients",
        json={"recipients": [{"email": email}]},
        headers=headers,
    )
    assert response.json()["enrolled"] == 1, response.text
    return response


async def received(smtp: SmtpSink, email: str) -> None:
    async def arrived() -> bool:
        return bool(smtp.to(email))

    await eventually(arrived, timeout=60, what=f"the mail to {email}")


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def worker_lines(capsys: Any, email: str, message: str) -> list[dict[str, Any]]:
    """The JSON lines about `email` up to the first `message` (bounded wait)."""
    lines: list[dict[str, Any]] = []

    async def logged() -> bool:
        lines.extend(line for line in json_lines(capsys.readouterr().err)
                     if line.get("recipient") == email)  # fmt: skip
        return any(line["message"] == message for line in lines)

    await eventually(logged, timeout=30, what=f"the line {message!r} about {email}")
    return lines


async def test_one_trace_from_the_enroll_request_to_the_smtp_hand_off(
    spans: InMemorySpanExporter,
    settings: Settings,
    dev_env: WorkflowEnvironment,
    smtp: SmtpSink,
    capsys: Any,
) -> None:
    email = f"traced@{unique_domain()}"
    async with running(settings, dev_env, smtp) as api:
        capsys.readouterr()
        await enroll_one(api, email)
        await received(smtp, email)
        lines = await worker_lines(capsys, email, "send sent")

        async def handed_off() -> list[ReadableSpan]:
            return [s for s in spans.get_finished_spans() if s.name == "smtp.send"]

        [smtp_span] = await eventually(handed_off, timeout=30, what="the smtp.send span")

    finished = spans.get_finished_spans()
    [request] = [s for s in finished if s.name == ENROLL and s.kind == SpanKind.SERVER]
    trace_id = request.context.trace_id
    in_trace = {s.name: s for s in finished if s.context.trace_id == trace_id}
    for name in ("StartWorkflow:RecipientWorkflow", "RunWorkflow:RecipientWorkflow",
                 "StartActivity:send_step", "RunActivity:send_step", "smtp.send"):  # fmt: skip
        assert name in in_trace, f"{name} not in the request's trace: {sorted(in_trace)}"
    # Parent by parent: request → start → workflow → activity → SMTP.
    assert smtp_span.context.trace_id == trace_id
    assert smtp_span.parent.span_id == in_trace["RunActivity:send_step"].context.span_id
    assert smtp_span.kind == SpanKind.CLIENT
    assert smtp_span.attributes["server.address"] == "127.0.0.1"
    assert smtp_span.attributes["server.port"] == smtp.port
    start = in_trace["StartWorkflow:RecipientWorkflow"]
    assert start.attributes["temporalWorkflowID"].endswith(email)
    # The log lines join the trace: the API's and the worker's.
    by_message = {line["message"]: line for line in lines}
    assert by_message["journey started"]["trace_id"] == format(trace_id, "032x")
    assert by_message["send sent"]["trace_id"] == format(trace_id, "032x")


def test_tracing_is_off_unless_an_exporter_is_named() -> None:
    """The standard variables and nothing else: unset, `none` or OTEL_SDK_DISABLED, no
    provider is installed, so no interceptor, middleware or wrapper either."""
    probe = (
        "from observability import tracing; tracing.configure_tracing('drip-test');"
        "print(tracing.tracer() is not None, len(tracing.interceptors()))"
    )

    def run(**env: str) -> str:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env={**clean, **env},
                                capture_output=True, text=True, check=True)  # fmt: skip
        return result.stdout.strip()

    assert run() == "False 1"  # the request-id interceptor only
    assert run(OTEL_TRACES_EXPORTER="none") == "False 1"
    assert run(OTEL_TRACES_EXPORTER="console", OTEL_SDK_DISABLED="true") == "False 1"
    assert run(OTEL_TRACES_EXPORTER="console") == "True 2"
    assert run(OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9") == (
        "True 2"
    )


async def test_the_request_id_reaches_the_workers_log_lines_for_that_journey(
    settings: Settings, dev_env: WorkflowEnvironment, smtp: SmtpSink, capsys: Any
) -> None:
    email = f"rid@{unique_domain()}"
    async with running(settings, dev_env, smtp) as api:
        capsys.readouterr()
        response = await enroll_one(api, email, **{"X-Request-ID": "enroll-42"})
        assert response.headers["x-request-id"] == "enroll-42"
        await received(smtp, email)

        lines = await worker_lines(capsys, email, "send sent")
        generated = await api.get("/api/campaigns", headers={"X-Request-ID": "bad id; x"})
    by_message = {line["message"]: line for line in lines}
    assert by_message["journey started"]["request_id"] == "enroll-42"  # the API's line
    assert by_message["journey started"]["logger"] == "services.journeys"
    sent = by_message["send sent"]  # the worker's line, from the send activity
    assert sent["logger"] == "temporalio.activity" and sent["request_id"] == "enroll-42"
    # A value we do not accept is replaced, not echoed: a fresh id.
    assert len(generated.headers["x-request-id"]) == 32
    assert generated.headers["x-request-id"] != "bad id"


async def test_a_csv_imports_request_id_reaches_the_journeys_it_enrolled(
    settings: Settings, dev_env: WorkflowEnvironment, smtp: SmtpSink, capsys: Any
) -> None:
    """Through the batch workflow and its activity, which starts the journeys."""
    email = f"imported@{unique_domain()}"
    async with running(settings, dev_env, smtp) as api:
        campaign_id = await one_step_campaign(api)
        capsys.readouterr()
        response = await api.post(
            f"/api/campaigns/{campaign_id}/recipients/import",
            files={"file": ("list.csv", f"email\n{email}\n".encode(), "text/csv")},
            headers={"X-Request-ID": "import-7"},
        )
        assert response.status_code == 202, response.text
        await received(smtp, email)
        lines = await worker_lines(capsys, email, "send sent")
    [sent] = [line for line in lines if line["message"] == "send sent"]
    assert sent["request_id"] == "import-7"
