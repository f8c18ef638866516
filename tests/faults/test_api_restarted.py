"""The API killed (SIGKILL) and restarted (SIGTERM) while a client keeps posting events: every
event acknowledged with 2xx is stored exactly once, counted once in the stats, and reaches its
journey (the API's outbox signals what a dead API stored but did not signal)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from sqlmodel import Session, col, select
from temporalio.client import Client

from storage import counters
from storage.models import Delivery, Enrollment, Event
from tests.faults.conftest import Stack, http, start_campaign, until
from workflows.recipient import RecipientWorkflow

pytestmark = pytest.mark.slow

RECIPIENTS = 40
ENGAGED = 30  # recipients that get events
EVENTS_EACH = 10
CONCURRENCY = 8


async def test_api_restarted_while_events_arrive(stack: Stack, say: Callable[[str], None]) -> None:
    async with http(stack.url) as api:
        # One message now, the next in an hour: every journey is live while the events arrive.
        campaign = await start_campaign(api, RECIPIENTS, [0, 3600], "api-restart")
    emails = campaign.emails

    def first_deliveries() -> dict[str, str] | None:
        """Recipient -> the delivery id of the first message, once every one went out."""
        with Session(stack.engine) as session:
            rows = session.exec(
                select(Enrollment.email, Delivery.id)
                .join(Delivery, col(Delivery.enrollment_id) == Enrollment.id)
                .where(Delivery.campaign_id == campaign.id, Delivery.status == "sent")
            ).all()
        return dict(rows) if len(rows) == RECIPIENTS else None

    delivery_of = await until(first_deliveries, 120, "every first message")
    events = [
        {"delivery_id": delivery_of[email], "type": "click", "event_id": f"c{campaign.id}-{i}-{k}",
         "url": f"https://example.com/{i}/{k}"}
        for i, email in enumerate(emails[:ENGAGED]) for k in range(EVENTS_EACH)
    ]  # fmt: skip
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    for event in events:
        queue.put_nowait(event)
    acked: dict[str, int] = {}
    again: set[str] = set()  # acked as a duplicate: an attempt cut off by the kill stored it
    refused = Counter[str]()

    async def poster(client: httpx.AsyncClient) -> None:
        """A provider's webhook sender: retries the same event until it gets a 2xx."""
        while not queue.empty():
            event = queue.get_nowait()
            while True:
                try:
                    response = await client.post("/api/events", json=event)
                except httpx.TransportError as exc:
                    refused[type(exc).__name__] += 1
                    await asyncio.sleep(0.2)
                    continue
                if response.status_code >= 500:
                    refused[str(response.status_code)] += 1
                    await asyncio.sleep(0.2)
                    continue
                assert response.status_code == 202, response.text
                acked[event["event_id"]] = response.json()["id"]
                if response.json()["duplicate"]:
                    again.add(event["event_id"])
                break

    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        posting = [asyncio.create_task(poster(client)) for _ in range(CONCURRENCY)]
        await until(lambda: len(acked) >= len(events) // 3, 60, "a third of the events acked")
        killed_after = len(acked)
        stack.api.kill()
        await asyncio.sleep(1)
        await asyncio.to_thread(stack.start_api)
        await until(lambda: len(acked) >= 2 * len(events) // 3, 60, "two thirds acked")
        stopped_after = len(acked)
        # A graceful restart too (SIGTERM: uvicorn finishes what it started); clients go on.
        await asyncio.to_thread(stack.api.stop)
        await asyncio.to_thread(stack.start_api)
        await asyncio.wait_for(asyncio.gather(*posting), 120)

    def stored() -> list[Event] | None:
        with Session(stack.engine) as session:
            rows = session.exec(select(Event).where(col(Event.campaign_id) == campaign.id)).all()
        return rows if rows and all(e.signalled for e in rows) else None

    rows = await until(stored, 60, "every stored event to be signalled (the outbox)")
    per_key = Counter(e.dedupe_key for e in rows)
    temporal = await Client.connect(stack.temporal.address)
    counted = {}
    for email in emails:
        handle = temporal.get_workflow_handle_for(
            RecipientWorkflow.run, f"drip-campaign-{campaign.id}-{email}"
        )
        counted[email] = (await handle.query(RecipientWorkflow.progress)).events_counted
    async with http(stack.url) as api:
        stats = (await api.get("/api/campaigns/stats", params={"campaign_id": campaign.id})).json()
    with Session(stack.engine) as session:
        running, truth = (
            counters.read(session, campaign.id),
            counters.from_rows(session, campaign.id),
        )
    say(f"{len(events)} events posted by {CONCURRENCY} concurrent clients; API SIGKILLed after "
        f"{killed_after} acks and SIGTERMed after {stopped_after}; failed attempts retried: "
        f"{dict(refused)}")  # fmt: skip
    say(f"acked {len(acked)}, {len(again)} of them as a duplicate (stored by an attempt a "
        f"restart cut off before it answered); stored {len(rows)} rows for {len(per_key)} event ids (max "
        f"{max(per_key.values())} per id), all signalled; journeys counted "
        f"{sum(counted.values())} events; stats {stats}")  # fmt: skip
    assert set(acked) == {e["event_id"] for e in events}
    assert set(per_key) == set(acked) and len(rows) == len(events), "each acked event stored once"
    assert counted == {e: (EVENTS_EACH if i < ENGAGED else 0) for i, e in enumerate(emails)}, (
        "every event reached its journey exactly once"
    )
    assert stats["click_rate"] == stats["open_rate"] == round(ENGAGED / RECIPIENTS, 3)
    assert running == truth, "the stats counters agree with the stored rows"
