"""SendGrid's Event Webhook over real HTTP: signed batches stored once, correlated to real
deliveries, and acted on by the journeys."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections import Counter
from typing import Any

from tests.api.webhooks.webhooks_support import (
    SENDGRID,
    Hooks,
    Sent,
    addresses,
    assert_journey_reactions,
    long_campaign,
    now_unix,
    open_test_campaign,
    step,
)
from tests.webhooks.signing import sendgrid_keypair, sign_sendgrid

UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15"
# SendGrid puts smtp-id on the events of its own pipeline, not on opens and clicks.
_WITH_SMTP_ID = {"processed", "deferred", "delivered", "bounce", "dropped"}


def sg(event: str, sent: Sent, **fields: Any) -> dict[str, Any]:
    """One event as SendGrid posts it: our custom_args flattened into the top level."""
    item: dict[str, Any] = {
        "email": sent.email,
        "timestamp": now_unix(),
        "event": event,
        "sg_event_id": base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="),
        "sg_message_id": "qYx7AbC2RtuVw9LmNoPq1A.recvd-6d8f9c7b5-k2j4h-1-6745D1A2-3.0",
        "category": ["drip"],
        "drip_delivery_id": sent.delivery_id,
        "campaign_id": str(sent.campaign_id),
    }
    if event in _WITH_SMTP_ID:
        item["smtp-id"] = f"<{sent.message_id}>"
    return {**item, **fields}


def every_event(sent: Sent) -> list[tuple[dict[str, Any], str | None]]:
    """Every SendGrid event type (and each `dropped` reason), with the type it must become."""
    hard = "550 5.1.1 The email account that you tried to reach does not exist."
    return [
        (sg("processed", sent), None),
        (sg("deferred", sent, response="400 try again later", attempt="2"), "bounce_soft"),
        (sg("delivered", sent, response="250 2.0.0 OK", tls=1, ip="149.72.34.118"), "delivered"),
        (
            sg("open", sent, useragent="Mozilla/5.0", ip="17.58.101.23", sg_machine_open=True),
            "open",
        ),
        (sg("open", sent, useragent=UA, ip="203.0.113.77", sg_machine_open=False), "open"),
        (
            sg(
                "click",
                sent,
                url="https://app.example.com/onboarding/step-2?utm_source=drip",
                url_offset={"index": 1, "type": "html"},
                useragent=UA,
                ip="203.0.113.77",
            ),
            "click",
        ),
        (sg("bounce", sent, type="blocked", status="4.0.0", reason="421 busy"), "bounce_soft"),
        (
            sg(
                "bounce",
                sent,
                type="bounce",
                status="5.1.1",
                reason=hard,
                bounce_classification="Invalid Address",
            ),
            "bounce_hard",
        ),
        (sg("dropped", sent, reason="Bounced Address", status="5.0.0"), "bounce_hard"),
        (sg("dropped", sent, reason="Invalid", status="5.0.0"), "bounce_hard"),
        (sg("dropped", sent, reason="Unsubscribed Address", status="5.0.0"), "unsubscribe"),
        (sg("dropped", sent, reason="Spam Reporting Address", status="5.0.0"), "complaint"),
        (sg("dropped", sent, reason="Invalid SMTPAPI header", status="5.0.0"), None),
        (sg("spamreport", sent), "complaint"),
        (sg("unsubscribe", sent), "unsubscribe"),
        (sg("group_unsubscribe", sent, asm_group_id=7), "unsubscribe"),
        (sg("group_resubscribe", sent, asm_group_id=7), None),
    ]


async def test_every_event_type_of_a_batch_is_stored_against_its_delivery(system: Hooks) -> None:
    [email] = addresses("maya")
    campaign = await long_campaign(system)
    await system.enroll(campaign, email)
    sent = await system.wait_sent(campaign, email)
    stranger = Sent(0, addresses("stranger")[0], "snd_01JD8Q52ZP0N7H1C4E6G8J2K4M", "x@y")
    expected = every_event(sent)
    batch = [item for item, _ in expected] + [sg("delivered", stranger)]

    response = await system.sendgrid(batch)
    assert response.status_code == 200, response.text
    n = len(batch)
    assert response.json() == {"received": n, "stored": n, "duplicates": 0}

    stored = await system.wait_signalled(delivery_id=sent.delivery_id)
    assert Counter((e["raw_type"], e["type"]) for e in stored) == Counter(
        (item["event"], kind) for item, kind in expected
    )
    for event in stored:
        assert event["provider"] == "sendgrid"
        assert event["campaign_id"] == campaign and event["email"] == sent.email
        assert event["url"] == (
            "https://app.example.com/onboarding/step-2?utm_source=drip"
            if event["type"] == "click"
            else None
        )
    machine = [e for e in stored if e["machine"]]
    assert [(e["raw_type"], e["machine_reason"]) for e in machine] == [
        ("open", "sendgrid_machine_open")
    ]

    # An event for mail we never sent: stored for inspection, acknowledged, signals nobody.
    [unmatched] = await system.events(email=stranger.email)
    assert unmatched["delivery_id"] == stranger.delivery_id
    assert unmatched["campaign_id"] is None and unmatched["signalled"] is True

    # The batch holds unsubscribes, complaints and hard bounces: the first to arrive ends it.
    ended = await system.wait_journey(
        campaign, email, lambda j: j["finished_at"] is not None, "the journey to end"
    )
    assert ended["status"] in ("bounced", "complained", "unsubscribed")
    stats = await system.stats(campaign)
    assert stats["open_rate"] == 1 and stats["click_rate"] == 1

    # SendGrid retries the whole batch: every event is recognised, nothing counted twice.
    again = await system.sendgrid(batch)
    assert again.status_code == 200
    assert again.json() == {"received": n, "stored": 0, "duplicates": n}
    assert len(await system.events()) == n
    assert await system.stats(campaign) == stats


async def test_duplicate_batches_even_concurrent_are_counted_once(system: Hooks) -> None:
    [email] = addresses("dup")
    campaign = await long_campaign(system)
    await system.enroll(campaign, email)
    sent = await system.wait_sent(campaign, email)
    batch = [
        sg("delivered", sent),
        sg("open", sent, useragent=UA, sg_machine_open=False),
        sg("click", sent, url="https://app.example.com/a", useragent=UA),
    ]

    # Two copies at once (SendGrid posts from several servers), then a late retry.
    first, second = await asyncio.gather(system.sendgrid(batch), system.sendgrid(batch))
    assert first.status_code == second.status_code == 200
    assert first.json()["stored"] + second.json()["stored"] == 3
    assert first.json()["duplicates"] + second.json()["duplicates"] == 3
    await system.wait_signalled(delivery_id=sent.delivery_id)
    retry = await system.sendgrid(batch)
    assert retry.json() == {"received": 3, "stored": 0, "duplicates": 3}

    # A new event after the duplicates: the journey has seen exactly four distinct events.
    late = await system.sendgrid([sg("click", sent, url="https://app.example.com/b")])
    assert late.json() == {"received": 1, "stored": 1, "duplicates": 0}
    await system.wait_signalled(delivery_id=sent.delivery_id)
    assert len(await system.events(delivery_id=sent.delivery_id)) == 4
    assert await system.live_events_counted(campaign, email) == 4
    journey = await system.journey(campaign, email)
    assert step(journey, 1)["clicked_urls"] == [
        "https://app.example.com/a",
        "https://app.example.com/b",
    ]
    stats = await system.stats(campaign)
    assert stats["open_rate"] == 1 and stats["click_rate"] == 1


async def test_journey_reacts_to_sendgrid_open_and_hard_bounce(system: Hooks) -> None:
    async def post_open(sent: Sent):  # type: ignore[no-untyped-def]
        return await system.sendgrid(
            [
                sg("processed", sent),
                sg("delivered", sent, response="250 2.0.0 OK"),
                sg("open", sent, useragent=UA, ip="203.0.113.77", sg_machine_open=False),
            ]
        )

    async def post_bounce(sent: Sent):  # type: ignore[no-untyped-def]
        reason = "550 5.1.1 The email account that you tried to reach does not exist."
        return await system.sendgrid(
            [
                sg("processed", sent),
                sg("bounce", sent, type="bounce", status="5.1.1", reason=reason),
            ]
        )

    await assert_journey_reactions(system, post_open, post_bounce)


async def test_apple_machine_open_does_not_meet_an_open_condition(system: Hooks) -> None:
    [email] = addresses("mpp")
    campaign = await open_test_campaign(system)
    await system.enroll(campaign, email)
    sent = await system.wait_sent(campaign, email)
    response = await system.sendgrid(
        [sg("open", sent, useragent="Mozilla/5.0", ip="17.58.101.23", sg_machine_open=True)]
    )
    assert response.json()["stored"] == 1

    done = await system.wait_finished(campaign, email, "completed")
    assert step(done, 1)["opened"] is False and step(done, 1)["machine_opens"] == 1
    assert step(done, 2)["decision"] == "sent", "an Apple proxy open is not a human open"
    assert (await system.stats(campaign))["open_rate"] == 0


async def test_async_bounce_without_custom_args_matches_by_smtp_id(system: Hooks) -> None:
    [email] = addresses("late-bounce")
    campaign = await long_campaign(system)
    await system.enroll(campaign, email)
    sent = await system.wait_sent(campaign, email)
    bounce = sg("bounce", sent, type="bounce", status="5.1.1", reason="550 5.1.1 no such user")
    for key in ("drip_delivery_id", "campaign_id", "sg_message_id", "category"):
        del bounce[key]  # an asynchronous bounce may come back with none of these

    response = await system.sendgrid([bounce])
    assert response.json()["stored"] == 1
    [event] = await system.wait_signalled(email=email)
    assert event["delivery_id"] == sent.delivery_id and event["campaign_id"] == campaign
    await system.wait_finished(campaign, email, "bounced")


async def test_forged_stale_or_unsigned_requests_are_401_and_store_nothing(hooks: Hooks) -> None:
    victim = Sent(1, addresses("victim")[0], "snd_01JD8Q4W7M2K9X3V5B6N8P0R1T", "m@x")
    batch = [sg("spamreport", victim)]
    intruder = sendgrid_keypair()

    forged = await hooks.sendgrid(batch, private_key=intruder.private_key)
    stale = await hooks.sendgrid(batch, timestamp=now_unix() - 73 * 3600)
    future = await hooks.sendgrid(batch, timestamp=now_unix() + 3600)
    unsigned = await hooks.api.post("/api/webhooks/sendgrid", json=batch)
    for response in (forged, stale, future, unsigned):
        assert response.status_code == 401, response.text
        assert isinstance(response.json()["detail"], str)

    # A valid signature over other bytes: the body was changed in transit.
    body = json.dumps(batch).encode()
    headers = sign_sendgrid(SENDGRID.private_key, now_unix(), body)
    tampered = await hooks.post("sendgrid", body.replace(b"spamreport", b"unsubscribe"), headers)
    assert tampered.status_code == 401
    assert await hooks.events() == []

    ok = await hooks.post("sendgrid", body, headers)
    assert ok.status_code == 200 and ok.json()["stored"] == 1
