"""Resend webhooks (delivered and signed by Svix) over real HTTP: HMAC over id.timestamp.body,
5-minute tolerance, several signatures during a rotation, dedupe on svix-id."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

from tests.api.webhooks.webhooks_support import (
    RESEND_SECRET,
    Hooks,
    Sent,
    addresses,
    assert_journey_reactions,
    long_campaign,
    now_iso,
    now_unix,
)
from tests.webhooks.signing import resend_secret, sign_resend


def rs(kind: str, sent: Sent, *, tags: str = "list", **data: Any) -> dict[str, Any]:
    """A Resend event. Our id comes back in data.tags: documented as a list of {name, value},
    seen as a plain object too; SMTP sends carry no tags, only our X-Drip-Delivery-Id header."""
    body: dict[str, Any] = {
        "email_id": str(uuid.uuid4()),
        "created_at": now_iso(),
        "from": "Example <hello@drip.example.com>",
        "to": [sent.email],
        "subject": "Welcome",
    }
    if tags == "list":
        body["tags"] = [
            {"name": "drip_delivery_id", "value": sent.delivery_id},
            {"name": "campaign_id", "value": str(sent.campaign_id)},
        ]
    elif tags == "object":
        body["tags"] = {"drip_delivery_id": sent.delivery_id, "campaign_id": str(sent.campaign_id)}
    else:
        body["headers"] = [
            {"name": "X-Drip-Delivery-Id", "value": sent.delivery_id},
            {"name": "Message-ID", "value": f"<{sent.message_id}>"},
        ]
    return {"type": kind, "created_at": now_iso(), "data": {**body, **data}}


def bounced(sent: Sent, kind: str = "Permanent") -> dict[str, Any]:
    return rs(
        "email.bounced",
        sent,
        bounce={
            "message": "The recipient's email address does not exist.",
            "subType": "General",
            "type": kind,
            "diagnosticCode": ["smtp; 550 5.1.1 user unknown"],
        },
    )


def opened(sent: Sent) -> dict[str, Any]:
    return rs("email.opened", sent)


def every_event(sent: Sent) -> list[tuple[dict[str, Any], str | None]]:
    click = {
        "ipAddress": "203.0.113.77",
        "link": "https://app.example.com/onboarding/step-2",
        "timestamp": now_iso(),
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/132.0",
    }
    suppressed = {
        "message": "Resend has suppressed sending to this address.",
        "type": "OnAccountSuppressionList",
    }
    return [
        (rs("email.scheduled", sent), None),
        (rs("email.sent", sent, tags="object"), None),
        (rs("email.delivered", sent, tags="headers"), "delivered"),
        (rs("email.delivery_delayed", sent), "bounce_soft"),
        (opened(sent), "open"),
        (rs("email.clicked", sent, tags="object", click=click), "click"),
        (bounced(sent, "Transient"), "bounce_soft"),
        (bounced(sent, "Permanent"), "bounce_hard"),
        (rs("email.complained", sent, tags="headers"), "complaint"),
        (rs("email.suppressed", sent, suppressed=suppressed), "bounce_hard"),
        (rs("email.failed", sent, failed={"reason": "reached_daily_quota"}), None),
    ]


async def test_every_event_type_is_stored_against_its_delivery(system: Hooks) -> None:
    [email] = addresses("maya")
    campaign = await long_campaign(system)
    await system.enroll(campaign, email)
    sent = await system.wait_sent(campaign, email)
    expected = every_event(sent)
    for payload, _ in expected:
        response = await system.resend(payload)
        assert response.status_code == 200, (payload["type"], response.text)
        assert response.json() == {"received": 1, "stored": 1, "duplicates": 0}

    stored = await system.wait_signalled(delivery_id=sent.delivery_id)
    assert Counter((e["raw_type"], e["type"]) for e in stored) == Counter(
        (payload["type"], kind) for payload, kind in expected
    )
    assert all(e["campaign_id"] == campaign and e["email"] == email for e in stored)
    [click] = [e for e in stored if e["type"] == "click"]
    assert click["url"] == "https://app.example.com/onboarding/step-2"
    ended = await system.wait_journey(
        campaign, email, lambda j: j["finished_at"] is not None, "the journey to end"
    )
    assert ended["status"] in ("bounced", "complained", "unsubscribed")

    # A Resend contact unsubscribing names no message: stored for inspection, acknowledged.
    contact = {
        "type": "contact.updated",
        "created_at": now_iso(),
        "data": {
            "id": str(uuid.uuid4()),
            "audience_id": str(uuid.uuid4()),
            "created_at": now_iso(),
            "updated_at": now_iso(),
            "email": email,
            "first_name": "Maya",
            "last_name": "Lopez",
            "unsubscribed": True,
        },
    }
    response = await system.resend(contact)
    assert response.json() == {"received": 1, "stored": 1, "duplicates": 0}
    [unmatched] = [e for e in await system.events(email=email) if e["delivery_id"] is None]
    assert unmatched["raw_type"] == "contact.updated" and unmatched["type"] == "unsubscribe"
    assert unmatched["campaign_id"] is None


async def test_journey_reacts_to_resend_open_and_bounce(system: Hooks) -> None:
    async def post_open(sent: Sent):  # type: ignore[no-untyped-def]
        return await system.resend(opened(sent))

    async def post_bounce(sent: Sent):  # type: ignore[no-untyped-def]
        return await system.resend(bounced(sent, "Permanent"))

    await assert_journey_reactions(system, post_open, post_bounce)


async def test_forged_or_stale_requests_are_401_and_retries_counted_once(hooks: Hooks) -> None:
    victim = Sent(1, addresses("victim")[0], "snd_01JD8Q4W7M2K9X3V5B6N8P0R1T", "m@x")
    payload = rs("email.complained", victim)
    forged = await hooks.resend(payload, secret=resend_secret())
    stale = await hooks.resend(payload, timestamp=now_unix() - 6 * 60)
    future = await hooks.resend(payload, timestamp=now_unix() + 6 * 60)
    unsigned = await hooks.api.post("/api/webhooks/resend", json=payload)
    body = json.dumps(payload).encode()
    headers = sign_resend(RESEND_SECRET, "msg_tampered", now_unix(), body)
    tampered = await hooks.post("resend", body.replace(b"complained", b"delivered"), headers)
    for response in (forged, stale, future, unsigned, tampered):
        assert response.status_code == 401, response.text
        assert isinstance(response.json()["detail"], str)
    assert await hooks.events() == []

    # While the secret rotates, Svix signs with both: one valid signature is enough.
    rotating = await hooks.resend(payload, msg_id="msg_2pQk7cZ9fXv3", rotated_out=resend_secret())
    assert rotating.json() == {"received": 1, "stored": 1, "duplicates": 0}
    # Svix re-signs each retry with a fresh timestamp; the svix-id stays: counted once.
    retry = await hooks.resend(payload, msg_id="msg_2pQk7cZ9fXv3", timestamp=now_unix() - 60)
    assert retry.json() == {"received": 1, "stored": 0, "duplicates": 1}
    assert len(await hooks.events()) == 1
