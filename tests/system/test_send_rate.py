"""DRIP_SEND_RATE caps sends with Temporal's task-queue rate limit on the send queue; without it,
journeys send on their own queue (the server may hand the send straight back, eagerly).

The server divides the rate among the queue's partitions (4 by default), each a token bucket of
burst 1: at 2/s, up to four sends start at once, then each partition lets one through every 2 s.
Twelve sends put at least three in some partition, so they take at least 4 s whichever way the
server spreads them; eight could fall two to a partition and start within 2 s (1.7 s measured)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from domain.journey import workflow_id
from settings import Settings
from storage.db import make_engine
from storage.models import Delivery
from tests.conftest import run_worker, serve_api, unique_domain
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template
from tools.smtp_sink import SmtpSink


async def test_send_rate_spreads_sends(
    settings: Settings, dev_env: WorkflowEnvironment, smtp: SmtpSink
) -> None:
    configured = settings.model_copy(update={"smtp_url": smtp.url, "send_rate": 2.0})
    async with serve_api(configured, dev_env.client) as api, run_worker(configured, dev_env.client):
        template = await make_template(api)
        campaign = await make_campaign(
            api, [{"subject": "one", "delay_hours": 0, "template_id": template}]
        )
        domain = unique_domain()
        emails = [f"r{n}@{domain}" for n in range(12)]
        await api.post(
            f"/api/campaigns/{campaign['id']}/recipients",
            json={"recipients": [{"email": e} for e in emails]},
        )

        async def all_received() -> bool:
            return all(smtp.to(e) for e in emails)

        await eventually(all_received, timeout=60, what="twelve messages")
    assert await send_queues(dev_env.client, campaign["id"], emails[0]) == [
        configured.send_task_queue
    ]
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        starts: list[datetime] = sorted(
            d.send_started_at
            for d in session.exec(
                select(Delivery).where(col(Delivery.campaign_id) == campaign["id"])
            )
        )
    engine.dispose()
    spread = (starts[-1] - starts[0]).total_seconds()
    print(f"12 sends at DRIP_SEND_RATE=2/s started over {spread:.2f} s")  # noqa: T201 (the figure measured)
    # Unlimited, twelve sends start within a fraction of a second; at 2/s they need at least 4 s.
    assert spread >= 3.5, spread


async def send_queues(client: Client, campaign_id: int, email: str) -> list[str]:
    """The task queues a journey's sends were scheduled on."""
    handle = client.get_workflow_handle(workflow_id(campaign_id, email))
    return [
        e.activity_task_scheduled_event_attributes.task_queue.name
        async for e in handle.fetch_history_events()
        if e.HasField("activity_task_scheduled_event_attributes")
    ]


async def test_unpaced_journeys_send_on_their_own_queue(
    settings: Settings, dev_env: WorkflowEnvironment, smtp: SmtpSink
) -> None:
    configured = settings.model_copy(update={"smtp_url": smtp.url})
    async with serve_api(configured, dev_env.client) as api, run_worker(configured, dev_env.client):
        template = await make_template(api)
        steps = [{"subject": s, "delay_hours": 0, "template_id": template} for s in ("1", "2")]
        campaign = await make_campaign(api, steps)
        email = f"own@{unique_domain()}"
        await api.post(
            f"/api/campaigns/{campaign['id']}/recipients", json={"recipients": [{"email": email}]}
        )

        async def both_received() -> bool:
            return len(smtp.to(email)) == 2

        await eventually(both_received, timeout=60, what="two messages")
    queues = await send_queues(dev_env.client, campaign["id"], email)
    assert queues == [settings.task_queue] * 2
