"""A campaign whose hard-bounce or complaint rate crosses its limit pauses itself, with the reason."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from settings import Settings
from tests.api.webhooks.test_webhooks_sendgrid import sg
from tests.api.webhooks.webhooks_support import addresses, serve_hooks
from tests.conftest import run_worker, serve_api, unique_domain
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template
from tests.support.journey import journey
from tools.smtp_sink import SmtpSink


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


async def test_provider_webhooks_use_the_configured_limits(
    settings: Settings, dev_env: WorkflowEnvironment
) -> None:
    """The limits come from settings on every event path, not only `POST /api/events`: a
    provider's hard bounce once met the default limits (100 sent at least) and paused nothing."""
    strict_settings = settings.model_copy(
        update={"reputation_min_sent": 4, "max_bounce_rate": 0.25, "max_complaint_rate": 0.25}
    )
    async with serve_hooks(strict_settings, dev_env, worker=True) as hooks:
        cid = await hooks.campaign(
            [{"subject": "one", "delay_hours": 0}, {"subject": "two", "delay_hours": 1}]
        )
        emails = addresses("r0", "r1", "r2", "r3")
        await hooks.enroll(cid, *emails)
        sent = [await hooks.wait_sent(cid, email) for email in emails]
        hard = "550 5.1.1 The email account that you tried to reach does not exist."
        response = await hooks.sendgrid(
            [sg("bounce", sent[0], type="bounce", status="5.1.1", reason=hard)]
        )
        assert response.status_code == 200, response.text
        campaign = (await hooks.api.get(f"/api/campaigns/{cid}")).json()
    assert campaign["status"] == "paused", campaign
    assert "bounce_hard" in campaign["status_reason"] and "25.00%" in campaign["status_reason"]
