"""Mailgun webhooks over real HTTP: HMAC over timestamp+token, one event per POST, and a token
seen before never creating a second event (the signature does not cover the event data)."""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from typing import Any

from tests.api.webhooks.webhooks_support import (
    MAILGUN_KEY,
    Hooks,
    Sent,
    addresses,
    assert_journey_reactions,
    long_campaign,
    now_unix,
)
from tests.webhooks.signing import sign_mailgun

CLIENT = {
    "client-type": "browser",
    "client-os": "iOS",
    "device-type": "mobile",
    "client-name": "Mobile Safari",
    "user-agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15",
}
GEO = {"country": "PT", "region": "11", "city": "Lisbon"}


def mg(event: str, sent: Sent, **fields: Any) -> dict[str, Any]:
    """One `event-data` object as Mailgun posts it; X-Mailgun-Variables come back as
    user-variables, and opens and clicks carry only the message-id header."""
    return {
        "event": event,
        "id": secrets.token_urlsafe(16),
        "timestamp": time.time(),
        "log-level": "info",
        "recipient": sent.email,
        "recipient-domain": sent.email.rpartition("@")[2],
        "tags": ["drip"],
        "campaigns": [],
        "user-variables": {
            "drip_delivery_id": sent.delivery_id,
            "campaign_id": str(sent.campaign_id),
        },
        "flags": {"is-routed": False, "is-authenticated": True, "is-test-mode": False},
        "message": {"headers": {"message-id": sent.message_id}},
        **fields,
    }


def delivered(sent: Sent) -> dict[str, Any]:
    return mg(
        "delivered",
        sent,
        envelope={"transport": "smtp", "sender": "hello@drip.example.com", "targets": sent.email},
        message={
            "headers": {
                "message-id": sent.message_id,
                "to": sent.email,
                "from": "hello@drip.example.com",
                "subject": "Welcome",
            },
            "size": 4213,
        },
        **{
            "delivery-status": {
                "tls": True,
                "mx-host": "mx.example.net",
                "code": 250,
                "description": "",
                "message": "OK",
                "attempt-no": 1,
                "session-seconds": 0.41,
            }
        },
    )


def opened(sent: Sent) -> dict[str, Any]:
    return mg("opened", sent, ip="203.0.113.77", geolocation=GEO, **{"client-info": CLIENT})


def clicked(sent: Sent, url: str = "https://app.example.com/onboarding/step-2") -> dict[str, Any]:
    return mg(
        "clicked", sent, url=url, ip="203.0.113.77", geolocation=GEO, **{"client-info": CLIENT}
    )


def failed(sent: Sent, severity: str = "permanent") -> dict[str, Any]:
    permanent = severity == "permanent"
    status = {
        "code": 550 if permanent else 452,
        "message": "5.1.1 The email account that you tried to reach does not exist."
        if permanent
        else "4.2.2 The email account that you tried to reach is over quota.",
        "description": "",
        "attempt-no": 1,
    }
    return mg(
        "failed",
        sent,
        severity=severity,
        reason="bounce" if permanent else "generic",
        **{"log-level": "error" if permanent else "warn", "delivery-status": status},
    )


def every_event(sent: Sent) -> list[tuple[dict[str, Any], str | None]]:
    return [
        (mg("accepted", sent, method="http"), None),
        (delivered(sent), "delivered"),
        (opened(sent), "open"),
        (clicked(sent), "click"),
        (failed(sent, "temporary"), "bounce_soft"),
        (failed(sent, "permanent"), "bounce_hard"),
        (mg("complained", sent), "complaint"),
        (mg("unsubscribed", sent, ip="203.0.113.77", **{"client-info": CLIENT}), "unsubscribe"),
        (
            mg(
                "rejected",
                sent,
                reject={
                    "reason": "Sandbox subdomains are for test purposes only",
                    "description": "",
                },
            ),
            None,
        ),
    ]


async def test_every_event_type_is_stored_against_its_delivery(system: Hooks) -> None:
    [email] = addresses("maya")
    campaign = await long_campaign(system)
    await system.enroll(campaign, email)
    sent = await system.wait_sent(campaign, email)
    expected = every_event(sent)
    for data, _ in expected:
        response = await system.mailgun(data)
        assert response.status_code == 200, (data["event"], response.text)
        assert response.json() == {"received": 1, "stored": 1, "duplicates": 0}

    stored = await system.wait_signalled(delivery_id=sent.delivery_id)
    assert Counter((e["raw_type"], e["type"]) for e in stored) == Counter(
        (data["event"], kind) for data, kind in expected
    )
    assert all(e["campaign_id"] == campaign and e["email"] == email for e in stored)
    [click] = [e for e in stored if e["type"] == "click"]
    assert click["url"] == "https://app.example.com/onboarding/step-2"
    ended = await system.wait_journey(
        campaign, email, lambda j: j["finished_at"] is not None, "the journey to end"
    )
    assert ended["status"] in ("bounced", "complained", "unsubscribed")


async def test_journey_reacts_to_mailgun_open_and_permanent_failure(system: Hooks) -> None:
    async def post_open(sent: Sent):  # type: ignore[no-untyped-def]
        return await system.mailgun(opened(sent))

    async def post_bounce(sent: Sent):  # type: ignore[no-untyped-def]
        return await system.mailgun(failed(sent, "permanent"))

    await assert_journey_reactions(system, post_open, post_bounce)


async def test_a_retried_token_is_acknowledged_and_a_replayed_one_refused(system: Hooks) -> None:
    [email] = addresses("replay")
    campaign = await long_campaign(system)
    await system.enroll(campaign, email)
    sent = await system.wait_sent(campaign, email)
    token, timestamp = secrets.token_hex(25), now_unix()
    original = opened(sent)

    first = await system.mailgun(original, token=token, timestamp=timestamp)
    assert first.json() == {"received": 1, "stored": 1, "duplicates": 0}
    await system.wait_signalled(delivery_id=sent.delivery_id)

    # Mailgun's own retry (same body) is acknowledged (200: Mailgun stops) and counts nothing.
    retry = await system.mailgun(original, token=token, timestamp=timestamp)
    assert retry.status_code == 200, retry.text
    assert retry.json() == {"received": 1, "stored": 0, "duplicates": 1}
    # The captured signature block on any other event, of any type, is refused.
    for forged_data in (failed(sent, "permanent"), {**original, "id": "another-event-id"}):
        forged = await system.mailgun(forged_data, token=token, timestamp=timestamp)
        assert forged.status_code == 401, forged.text
        assert forged.json()["detail"] == "signature already used for another event"

    [event] = await system.events(delivery_id=sent.delivery_id)
    assert event["type"] == "open"
    assert await system.live_events_counted(campaign, email) == 1
    journey = await system.journey(campaign, email)
    assert journey["status"] == "active" and journey["live"] is True
    assert (await system.stats(campaign))["open_rate"] == 1
    other = await system.campaign([{"subject": "x", "delay_hours": 24}])
    assert (await system.enroll(other, email))["enrolled"] == 1, "the address is not suppressed"


async def test_forged_stale_or_unsigned_requests_are_401_and_store_nothing(hooks: Hooks) -> None:
    victim = Sent(1, addresses("victim")[0], "snd_01JD8Q4W7M2K9X3V5B6N8P0R1T", "m@x")
    data = mg("complained", victim)
    forged = await hooks.mailgun(data, key=secrets.token_hex(32))
    stale = await hooks.mailgun(data, timestamp=now_unix() - 25 * 3600)
    future = await hooks.mailgun(data, timestamp=now_unix() + 3600)
    unsigned = await hooks.api.post("/api/webhooks/mailgun", json={"event-data": data})
    block = sign_mailgun(MAILGUN_KEY, now_unix(), secrets.token_hex(25))
    block["signature"] = block["signature"][::-1]
    tampered = await hooks.post(
        "mailgun",
        json.dumps({"signature": block, "event-data": data}).encode(),
        {"content-type": "application/json"},
    )
    legacy_form = await hooks.api.post("/api/webhooks/mailgun", data={"event": "complained"})
    for response in (forged, stale, future, unsigned, tampered, legacy_form):
        assert response.status_code == 401, response.text
        assert isinstance(response.json()["detail"], str)
    assert await hooks.events() == []

    # Within the window Mailgun's retries need (hours, not seconds), a signature is accepted.
    # (The event happened before it was signed.)
    old_event = {**data, "timestamp": time.time() - 8 * 3600}
    hours_late = await hooks.mailgun(old_event, timestamp=now_unix() - 7 * 3600)
    assert hours_late.status_code == 200 and hours_late.json()["stored"] == 1
