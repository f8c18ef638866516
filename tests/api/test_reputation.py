"""A campaign whose hard-bounce or complaint rate crosses its limit pauses itself, with the reason."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from settings import Settings
from tests.api.helpers import eventually, journey, make_campaign, make_template
from tests.conftest import run_worker, serve_api, unique_domain
from tests.smtp import SmtpSink


@pytest.fixture
async def strict(
    settings: Settings, dev_env: WorkflowEnvironment, smtp: SmtpSink
) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(
        update={
            "smtp_url": smtp.url,
            "reputation_min_sent": 4,
            "max_bounce_rate": 0.25,
            "max_complaint_rate": 0.25,
        }
    )
    async with serve_api(configured, dev_env.client) as api, run_worker(configured, dev_env.client):
        yield api


async def run_four(api: httpx.AsyncClient) -> tuple[int, list[str]]:
    template = await make_template(api)
    campaign = await make_campaign(
        api,
        [
            {"subject": "one", "delay_hours": 0, "template_id": template},
            {"subject": "two", "delay_hours": 1, "template_id": template},
        ],
    )
    cid, domain = campaign["id"], unique_domain()
    emails = [f"r{n}@{domain}" for n in range(4)]
    await api.post(
        f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": e} for e in emails]}
    )

    async def sent() -> list[str] | None:
        ids = []
        for email in emails:
            steps = (await journey(api, cid, email))["steps"]
            if not steps or steps[0]["delivery_status"] != "sent":
                return None
            ids.append(steps[0]["delivery_id"])
        return ids

    return cid, await eventually(sent, what="four first messages")


@pytest.mark.parametrize("kind", ["complaint", "bounce_hard"])
async def test_rate_over_the_limit_pauses_the_campaign(
    strict: httpx.AsyncClient, kind: str
) -> None:
    api = strict
    cid, deliveries = await run_four(api)
    await api.post("/api/events", json={"delivery_id": deliveries[0], "type": kind})
    campaign = (await api.get(f"/api/campaigns/{cid}")).json()
    assert campaign["status"] == "paused"
    assert kind in campaign["status_reason"] and "25.00%" in campaign["status_reason"]


async def test_rate_under_the_limit_keeps_it_running(strict: httpx.AsyncClient) -> None:
    api = strict
    cid, deliveries = await run_four(api)
    await api.post("/api/events", json={"delivery_id": deliveries[0], "type": "bounce_soft"})
    await api.post("/api/events", json={"delivery_id": deliveries[1], "type": "open"})
    assert (await api.get(f"/api/campaigns/{cid}")).json()["status"] == "active"
