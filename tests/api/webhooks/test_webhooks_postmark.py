"""Postmark webhooks over real HTTP: Basic-authenticated records, one per POST, stored once,
correlated by Metadata, and acted on by the journeys."""

from __future__ import annotations

import secrets
import uuid
from collections import Counter
from typing import Any

from tests.api.webhooks.webhooks_support import (
    POSTMARK_USER,
    Hooks,
    Sent,
    addresses,
    assert_journey_reactions,
    long_campaign,
    now_iso,
)


def _common(sent: Sent) -> dict[str, Any]:
    return {
        "MessageID": str(uuid.uuid4()),  # Postmark's own id, not our Message-ID
        "MessageStream": "outbound",
        "ServerID": 88231,
        "Tag": f"drip-campaign-{sent.campaign_id}",
        # X-PM-Metadata-drip_delivery_id comes back here.
        "Metadata": {"drip_delivery_id": sent.delivery_id, "campaign_id": str(sent.campaign_id)},
    }


def delivery(sent: Sent) -> dict[str, Any]:
    return {
        "RecordType": "Delivery",
        **_common(sent),
        "Recipient": sent.email,
        "DeliveredAt": now_iso(),
        "Details": "smtp;250 2.0.0 OK 1732619045 d2e1a72fcca58-72f1",
    }


def opened(sent: Sent) -> dict[str, Any]:
    return {
        "RecordType": "Open",
        **_common(sent),
        "FirstOpen": True,
        "Client": {"Name": "Apple Mail", "Company": "Apple", "Family": "Apple Mail"},
        "OS": {"Name": "iOS 17", "Company": "Apple", "Family": "iOS"},
        "Platform": "Mobile",
        "UserAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X)",
        "ReadSeconds": 5,
        "Geo": {"CountryISOCode": "PT", "Country": "Portugal", "City": "Lisbon"},
        "ReceivedAt": now_iso(),
        "Recipient": sent.email,
    }


def clicked(sent: Sent, link: str = "https://app.example.com/onboarding/step-2") -> dict[str, Any]:
    return {
        "RecordType": "Click",
        **_common(sent),
        "ClickLocation": "HTML",
        "OriginalLink": link,
        "Recipient": sent.email,
        "ReceivedAt": now_iso(),
        "UserAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/130.0",
        "Platform": "Desktop",
        "Client": {"Name": "Chrome 130.0", "Company": "Google", "Family": "Chrome"},
        "OS": {"Name": "Windows 10", "Company": "Microsoft Corporation", "Family": "Windows 10"},
        "Geo": {"CountryISOCode": "PT", "Country": "Portugal", "IP": "203.0.113.77"},
    }


_BOUNCE_NAMES = {
    "HardBounce": (1, "Hard bounce"),
    "Transient": (2, "Message delayed"),
    "AutoResponder": (32, "Auto responder"),
    "SoftBounce": (4096, "Soft bounce"),
    "SpamNotification": (1024, "Spam notification"),
}


def bounce(sent: Sent, kind: str = "HardBounce", inactive: bool | None = None) -> dict[str, Any]:
    code, name = _BOUNCE_NAMES[kind]
    return {
        "RecordType": "Bounce",
        "ID": secrets.randbelow(2**32),
        "Type": kind,
        "TypeCode": code,
        "Name": name,
        **_common(sent),
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "Details": f"smtp;550 5.1.1 <{sent.email}>: Recipient address rejected: User unknown",
        "Email": sent.email,
        "From": "hello@drip.example.com",
        "BouncedAt": now_iso(),
        "DumpAvailable": False,
        "Inactive": kind == "HardBounce" if inactive is None else inactive,
        "CanActivate": True,
        "Subject": "Welcome",
    }


def spam_complaint(sent: Sent) -> dict[str, Any]:
    return {
        "RecordType": "SpamComplaint",
        "ID": secrets.randbelow(2**32),
        "Type": "SpamComplaint",
        "TypeCode": 512,
        "Name": "Spam complaint",
        **_common(sent),
        "Description": "",
        "Details": "Test spam complaint details",
        "Email": sent.email,
        "From": "hello@drip.example.com",
        "BouncedAt": now_iso(),
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": False,
        "Subject": "Welcome",
    }


def subscription_change(sent: Sent, suppress: bool, reason: str | None) -> dict[str, Any]:
    return {
        "RecordType": "SubscriptionChange",
        **_common(sent),
        "ChangedAt": now_iso(),
        "Recipient": sent.email,
        "Origin": "Recipient",
        "SuppressSending": suppress,
        "SuppressionReason": reason,
    }


async def test_every_record_type_is_stored_against_its_delivery(system: Hooks) -> None:
    [email] = addresses("maya")
    campaign = await long_campaign(system)
    await system.enroll(campaign, email)
    sent = await system.wait_sent(campaign, email)
    expected = [
        (delivery(sent), "delivered"),
        (opened(sent), "open"),
        (clicked(sent), "click"),
        (bounce(sent, "Transient"), "bounce_soft"),
        (bounce(sent, "SoftBounce"), "bounce_soft"),
        (bounce(sent, "SpamNotification"), "bounce_soft"),
        (bounce(sent, "AutoResponder"), None),  # not a delivery failure
        (bounce(sent, "SoftBounce", inactive=True), "bounce_hard"),  # Postmark deactivated it
        (bounce(sent, "HardBounce"), "bounce_hard"),
        (spam_complaint(sent), "complaint"),
        (subscription_change(sent, True, "ManualSuppression"), "unsubscribe"),
        (subscription_change(sent, True, "HardBounce"), "bounce_hard"),
        (subscription_change(sent, False, None), None),  # a reactivation
    ]
    for record, _ in expected:
        response = await system.postmark(record)
        assert response.status_code == 200, (record["RecordType"], response.text)
        assert response.json() == {"received": 1, "stored": 1, "duplicates": 0}

    stored = await system.wait_signalled(delivery_id=sent.delivery_id)
    assert Counter((e["raw_type"], e["type"]) for e in stored) == Counter(
        (record["RecordType"], kind) for record, kind in expected
    )
    assert all(e["campaign_id"] == campaign and e["email"] == email for e in stored)
    [click] = [e for e in stored if e["type"] == "click"]
    assert click["url"] == "https://app.example.com/onboarding/step-2"
    ended = await system.wait_journey(
        campaign, email, lambda j: j["finished_at"] is not None, "the journey to end"
    )
    assert ended["status"] in ("bounced", "complained", "unsubscribed")

    # Postmark retries: an Open (no ID: deduped on its content) and a Bounce (deduped on ID).
    for record, _ in (expected[1], expected[8]):
        retry = await system.postmark(record)
        assert retry.json() == {"received": 1, "stored": 0, "duplicates": 1}
    assert len(await system.events()) == len(expected)


async def test_journey_reacts_to_postmark_open_and_hard_bounce(system: Hooks) -> None:
    async def post_open(sent: Sent):  # type: ignore[no-untyped-def]
        return await system.postmark(opened(sent))

    async def post_bounce(sent: Sent):  # type: ignore[no-untyped-def]
        return await system.postmark(bounce(sent, "HardBounce"))

    await assert_journey_reactions(system, post_open, post_bounce)


async def test_bad_credentials_are_401_and_wrong_payloads_400(hooks: Hooks) -> None:
    victim = Sent(1, addresses("victim")[0], "snd_01JD8Q4W7M2K9X3V5B6N8P0R1T", "m@x")
    record = spam_complaint(victim)
    for response in (
        await hooks.postmark(record, password="guess"),
        await hooks.postmark(record, user="someone-else"),
        await hooks.postmark(record, password=""),
        await hooks.api.post("/api/webhooks/postmark", json=record),  # no credentials at all
        await hooks.api.post(
            "/api/webhooks/postmark", json=record, headers={"authorization": "Bearer x"}
        ),
    ):
        assert response.status_code == 401, response.text
        assert isinstance(response.json()["detail"], str)
    assert POSTMARK_USER not in response.text

    inbound = {"FromFull": {"Email": victim.email}, "Subject": "Re: Welcome", "TextBody": "hi"}
    for body in (inbound, {**record, "RecordType": "Mystery"}):
        response = await hooks.postmark(body)
        assert response.status_code == 400, response.text
        assert isinstance(response.json()["detail"], str)
    assert await hooks.events() == []
