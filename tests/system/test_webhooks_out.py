"""Journey events out, end to end on the dev server with the real worker, API and SMTP server:
a local receiver gets each fact of a journey as a signed POST (checked here with an HMAC
written from the docs), a refused POST is retried until taken, and the attempts show in
`GET /api/webhook-subscriptions/{id}/deliveries`."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from settings import Settings
from tests.conftest import unique_domain
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template
from tests.support.journey import ended
from tests.support.receiver import Received, Receiver
from tools.smtp_sink import SmtpSink

SECOND = 1 / 3600


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allow_private": True})  # the receiver is local


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def verified(request: Received, secret: str) -> dict[str, Any]:
    """The body, once its Drip-Signature checks out (t={unix},v1=HMAC-SHA256("{t}." + body))."""
    fields = dict(part.split("=", 1) for part in request.headers["Drip-Signature"].split(","))
    mac = hmac.new(secret.encode(), fields["t"].encode() + b"." + request.body, hashlib.sha256)
    assert hmac.compare_digest(mac.hexdigest(), fields["v1"]), request
    assert request.headers["Content-Type"] == "application/json"
    body: dict[str, Any] = json.loads(request.body)
    assert body.keys() == {"id", "type", "occurred_at", "data"}
    return body


async def subscribe(api: httpx.AsyncClient, url: str, events: list[str]) -> dict[str, Any]:
    made = await api.post("/api/webhook-subscriptions", json={"url": url, "events": events})
    assert made.status_code == 201, made.text
    return made.json()


async def all_delivered(api: httpx.AsyncClient, sub: dict[str, Any]) -> list[dict[str, Any]]:
    """The subscription's delivery rows, once each shows delivered: the worker records an
    attempt after the receiver's answer reaches it, so a test that saw the answer waits."""

    async def recorded() -> list[dict[str, Any]] | None:
        page = (await api.get(f"/api/webhook-subscriptions/{sub['id']}/deliveries")).json()
        rows: list[dict[str, Any]] = page["items"]
        return rows if rows and all(d["status"] == "delivered" for d in rows) else None

    return await eventually(recorded, "every delivery to show delivered", 10)


async def received(receiver: Receiver, count: int, timeout: float = 30) -> list[Received]:
    async def enough() -> list[Received] | None:
        got = receiver.snapshot()
        return got if len(got) >= count else None

    return await eventually(enough, f"{count} webhook requests", timeout)


async def test_a_journeys_facts_arrive_signed_with_the_step_sent_matching_the_mail(
    system: httpx.AsyncClient, smtp: SmtpSink, receiver: Receiver
) -> None:
    api = system
    sub = await subscribe(
        api, receiver.url, ["journey.started", "step.sent", "step.skipped", "journey.completed"]
    )
    template = await make_template(api)
    campaign = await make_campaign(
        api,
        [
            {"subject": "one", "delay_hours": 0, "template_id": template},
            {"subject": "two", "delay_hours": SECOND, "template_id": template,
             "condition": {"type": "opened", "step_order": 1}},  # no open: skipped
        ],
    )  # fmt: skip
    cid, email = campaign["id"], f"maya@{unique_domain()}"
    await api.post(f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": email}]})
    await ended(api, cid, email)
    bodies = [verified(r, sub["secret"]) for r in await received(receiver, 4)]
    assert sorted(b["type"] for b in bodies) == sorted(
        ["journey.started", "step.sent", "step.skipped", "journey.completed"]
    )
    assert all(b["data"]["email"] == email and b["data"]["campaign_id"] == cid for b in bodies)
    assert len({b["id"] for b in bodies}) == 4
    [sent] = [b for b in bodies if b["type"] == "step.sent"]
    assert (sent["data"]["step_order"], sent["data"]["subject"]) == (1, "one")
    [raw] = [m.content for m in smtp.raw_to(email)]  # the wire bytes of the message
    assert f"X-Drip-Delivery: {sent['data']['delivery_id']}".encode() in raw
    [completed] = [b for b in bodies if b["type"] == "journey.completed"]
    assert completed["data"]["status"] == "completed"

    rows = await all_delivered(api, sub)
    assert {(d["status"], d["attempts"], d["last_status_code"]) for d in rows} == {
        ("delivered", 1, 200)
    }
    assert {d["event_id"] for d in rows} == {b["id"] for b in bodies}


async def test_a_refused_delivery_is_retried_until_taken_and_its_attempts_show(
    system: httpx.AsyncClient, receiver: Receiver
) -> None:
    api = system
    sub = await subscribe(api, receiver.url, ["step.sent"])
    receiver.answers = [500, 503]
    template = await make_template(api)
    campaign = await make_campaign(
        api, [{"subject": "one", "delay_hours": 0, "template_id": template}]
    )
    cid, email = campaign["id"], f"li@{unique_domain()}"
    await api.post(f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": email}]})
    first, second, third = await received(receiver, 3, timeout=60)
    assert [r.answered for r in (first, second, third)] == [500, 503, 200]
    assert first.body == second.body == third.body  # the same event, byte for byte
    assert verified(third, sub["secret"])["type"] == "step.sent"
    assert third.at - second.at >= 9  # backoff: 5 s, then 10 s

    [row] = await all_delivered(api, sub)
    assert (row["attempts"], row["last_status_code"], row["last_error"]) == (3, 200, None)


async def test_a_bounce_tells_delivery_bounced_and_journey_exited(
    system: httpx.AsyncClient, smtp: SmtpSink, receiver: Receiver
) -> None:
    api = system
    sub = await subscribe(api, receiver.url, ["delivery.bounced", "journey.exited", "step.sent"])
    template = await make_template(api)
    campaign = await make_campaign(
        api, [{"subject": "one", "delay_hours": 0, "template_id": template}]
    )
    cid, email = campaign["id"], f"nobody@{unique_domain()}"
    smtp.rcpt_replies[email] = "550 5.1.1 <nobody>: Recipient address rejected: User unknown"
    await api.post(f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": email}]})
    await ended(api, cid, email)
    bodies = {
        b["type"]: b for b in (verified(r, sub["secret"]) for r in await received(receiver, 2))
    }
    assert bodies.keys() == {"delivery.bounced", "journey.exited"}  # never sent: no step.sent
    assert bodies["delivery.bounced"]["data"]["bounce"] == "hard"
    assert bodies["delivery.bounced"]["data"]["provider"] == "smtp"
    assert bodies["journey.exited"]["data"]["status"] == "bounced"


async def test_a_goal_event_tells_journey_converted(
    system: httpx.AsyncClient, receiver: Receiver
) -> None:
    api = system
    sub = await subscribe(api, receiver.url, ["step.sent", "journey.converted"])
    template = await make_template(api)
    campaign = await make_campaign(
        api,
        [{"subject": "Welcome", "delay_hours": 0, "template_id": template},
         {"subject": "Tomorrow", "delay_hours": 24, "template_id": template}],
        goal={"event": "order.completed", "window_hours": 72},
    )  # fmt: skip
    cid, email = campaign["id"], f"dee@{unique_domain()}"
    await api.post(f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": email}]})
    [sent] = await received(receiver, 1)
    assert verified(sent, sub["secret"])["type"] == "step.sent"
    tracked = await api.post(
        "/api/track", json={"email": email, "event": "order.completed", "event_id": f"o-{email}"}
    )
    assert tracked.status_code == 202, tracked.text
    _, converted = await received(receiver, 2)
    body = verified(converted, sub["secret"])
    assert body["type"] == "journey.converted"
    assert (body["data"]["email"], body["data"]["status"]) == (email, "converted")
