import json
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from tests.webhooks.signing import sendgrid_keypair, sign_sendgrid
from webhooks import build_providers
from webhooks.errors import WebhookAuthError, WebhookDisabled, WebhookPayloadError
from webhooks.sendgrid import SendGridProvider

KEYS = sendgrid_keypair()
OTHER_KEYS = sendgrid_keypair()
SND = "snd_01JD8Q4W7M2K9X3V5B6N8P0R1T"
SMTP_ID = f"<{SND}@mail.drip.example.com>"


def ev(event: str, sg_event_id: str, **fields):
    return {
        "email": "Maya.Lopez@Example.net",
        "timestamp": 1732619045,
        "event": event,
        "smtp-id": SMTP_ID,
        "sg_event_id": sg_event_id,
        "sg_message_id": "qYx7AbC2RtuVw9LmNoPq1A.recvd-6d8f9c7b5-k2j4h-1-6745D1A2-3.0",
        "category": ["drip", "campaign-12"],
        "drip_delivery_id": SND,
        "campaign_id": "12",
        **fields,
    }


BATCH = [
    ev("processed", "e-processed"),
    ev("delivered", "e-delivered", response="250 2.0.0 OK", tls=1, ip="149.72.34.118"),
    ev("open", "e-open", useragent="Mozilla/5.0", ip="17.58.101.23", sg_machine_open=True),
    ev("open", "e-open-human", useragent="Mozilla/5.0 (Windows NT 10.0)", sg_machine_open=False),
    ev(
        "click",
        "e-click",
        url="https://app.example.com/onboarding/step-2?utm_source=drip",
        url_offset={"index": 1, "type": "html"},
    ),
    ev(
        "bounce",
        "e-bounce",
        type="bounce",
        status="5.1.1",
        reason="550 5.1.1 The email account that you tried to reach does not exist.",
        bounce_classification="Invalid Address",
    ),
    ev("bounce", "e-blocked", type="blocked", status="4.0.0", reason="421 try again later"),
    ev("deferred", "e-deferred", response="400 try again later", attempt="5"),
    ev("dropped", "e-dropped-bounced", reason="Bounced Address", status="5.0.0"),
    ev("dropped", "e-dropped-invalid", reason="Invalid", status="5.0.0"),
    ev("dropped", "e-dropped-unsub", reason="Unsubscribed Address", status="5.0.0"),
    ev("dropped", "e-dropped-spam", reason="Spam Reporting Address", status="5.0.0"),
    ev("dropped", "e-dropped-smtpapi", reason="Invalid SMTPAPI header", status="5.0.0"),
    ev("spamreport", "e-spam"),
    ev("unsubscribe", "e-unsub"),
    ev("group_unsubscribe", "e-group-unsub", asm_group_id=7),
    ev("group_resubscribe", "e-group-resub", asm_group_id=7),
]
EXPECTED_TYPES = {
    "e-processed": None,
    "e-delivered": "delivered",
    "e-open": "open",
    "e-open-human": "open",
    "e-click": "click",
    "e-bounce": "bounce_hard",
    "e-blocked": "bounce_soft",
    "e-deferred": "bounce_soft",
    "e-dropped-bounced": "bounce_hard",
    "e-dropped-invalid": "bounce_hard",
    "e-dropped-unsub": "unsubscribe",
    "e-dropped-spam": "complaint",
    "e-dropped-smtpapi": None,
    "e-spam": "complaint",
    "e-unsub": "unsubscribe",
    "e-group-unsub": "unsubscribe",
    "e-group-resub": None,
}


def provider(key: str | None = KEYS.public_b64) -> SendGridProvider:
    return build_providers(SimpleNamespace(sendgrid_webhook_public_key=key))["sendgrid"]


def signed(body: bytes, keys=KEYS, timestamp: int | None = None) -> dict[str, str]:
    return sign_sendgrid(keys.private_key, timestamp or int(time.time()), body)


@pytest.mark.parametrize("key", [KEYS.public_b64, KEYS.public_pem], ids=["base64-der", "pem"])
async def test_batch_is_verified_and_every_event_mapped(key):
    body = json.dumps(BATCH).encode()
    events = await provider(key).handle(signed(body), body)

    assert [e.dedupe_key for e in events] == [item["sg_event_id"] for item in BATCH]
    assert {e.dedupe_key: e.type for e in events} == EXPECTED_TYPES
    for event, item in zip(events, BATCH, strict=True):
        assert event.provider == "sendgrid"
        assert event.raw == item
        assert event.raw_type == item["event"]
        assert event.delivery_id == SND
        assert event.message_id == f"{SND}@mail.drip.example.com"
        assert event.recipient == "maya.lopez@example.net"
        assert event.occurred_at == datetime(2024, 11, 26, 11, 4, 5, tzinfo=UTC)


async def test_event_details():
    body = json.dumps(BATCH).encode()
    events = {e.dedupe_key: e for e in await provider().handle(signed(body), body)}

    assert events["e-open"].machine is True
    assert events["e-open"].machine_reason == "sendgrid_machine_open"
    assert events["e-open-human"].machine is False
    assert events["e-open-human"].machine_reason is None
    assert events["e-click"].url == "https://app.example.com/onboarding/step-2?utm_source=drip"
    assert events["e-delivered"].url is None
    assert events["e-bounce"].bounce == {
        "kind": "hard",
        "smtp_status": "5.1.1",
        "diagnostic": "550 5.1.1 The email account that you tried to reach does not exist.",
    }
    assert events["e-blocked"].bounce["kind"] == "soft"
    assert events["e-deferred"].bounce == {
        "kind": "soft",
        "smtp_status": None,
        "diagnostic": "400 try again later",
    }
    assert events["e-dropped-bounced"].bounce["kind"] == "hard"
    assert events["e-delivered"].bounce is None


async def test_async_bounce_without_custom_args_falls_back_to_smtp_id():
    # An asynchronous bounce may come with no sg_message_id and no unique_args.
    item = {
        "email": "old.account@example.org",
        "timestamp": 1732619050,
        "event": "bounce",
        "type": "bounce",
        "smtp-id": "<snd_01JD8Q52ZP0N7H1C4E6G8J2K4M@mail.drip.example.com>",
        "status": "5.1.1",
        "reason": "550 5.1.1 user unknown",
        "sg_event_id": "Ym91bmNlLTAtNDQxMjQwMDEtM3c",
    }
    body = json.dumps([item]).encode()
    [event] = await provider().handle(signed(body), body)
    assert event.type == "bounce_hard"
    assert event.delivery_id is None
    assert event.message_id == "snd_01JD8Q52ZP0N7H1C4E6G8J2K4M@mail.drip.example.com"


async def test_missing_sg_event_id_still_gets_a_stable_dedupe_key():
    item = {"email": "a@example.net", "timestamp": 1732619050, "event": "delivered"}
    body = json.dumps([item]).encode()
    [first] = await provider().handle(signed(body), body)
    [again] = await provider().handle(signed(body), body)
    assert first.dedupe_key == again.dedupe_key
    assert first.dedupe_key.startswith("sha256:")


async def test_headers_are_case_insensitive():
    body = json.dumps(BATCH[:1]).encode()
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": signed(body)[
            "x-twilio-email-event-webhook-signature"
        ],
        "X-TWILIO-EMAIL-EVENT-WEBHOOK-TIMESTAMP": signed(body)[
            "x-twilio-email-event-webhook-timestamp"
        ],
    }
    assert len(await provider().handle(headers, body)) == 1


async def test_forged_signature_is_rejected():
    body = json.dumps(BATCH).encode()
    with pytest.raises(WebhookAuthError, match="invalid signature"):
        await provider().handle(signed(body, keys=OTHER_KEYS), body)


async def test_tampered_body_is_rejected():
    body = json.dumps(BATCH).encode()
    headers = signed(body)
    tampered = body.replace(b'"type": "blocked"', b'"type": "bounce"')
    assert tampered != body
    with pytest.raises(WebhookAuthError):
        await provider().handle(headers, tampered)


async def test_tampered_timestamp_is_rejected():
    body = json.dumps(BATCH).encode()
    headers = signed(body)
    headers["x-twilio-email-event-webhook-timestamp"] = str(int(time.time()) - 1)
    with pytest.raises(WebhookAuthError):
        await provider().handle(headers, body)


@pytest.mark.parametrize(
    "missing",
    ["x-twilio-email-event-webhook-signature", "x-twilio-email-event-webhook-timestamp"],
)
async def test_missing_header_is_rejected(missing):
    body = json.dumps(BATCH).encode()
    headers = signed(body)
    del headers[missing]
    with pytest.raises(WebhookAuthError):
        await provider().handle(headers, body)


@pytest.mark.parametrize("garbage", ["not base64!", "AAAA", ""])
async def test_malformed_signature_gets_the_same_answer_as_a_wrong_one(garbage):
    body = json.dumps(BATCH).encode()
    headers = signed(body)
    headers["x-twilio-email-event-webhook-signature"] = garbage
    with pytest.raises(WebhookAuthError) as caught:
        await provider().handle(headers, body)
    assert caught.value.status_code == 401


async def test_day_old_timestamp_is_accepted_but_a_very_old_one_is_not():
    body = json.dumps(BATCH[:1]).encode()
    day_old = int(time.time()) - 26 * 3600  # SendGrid retries for 24 h; may reuse the timestamp
    assert len(await provider().handle(signed(body, timestamp=day_old), body)) == 1
    ancient = int(time.time()) - 10 * 24 * 3600
    with pytest.raises(WebhookAuthError):
        await provider().handle(signed(body, timestamp=ancient), body)


@pytest.mark.parametrize("body", [b'{"event": "delivered"}', b"[1, 2]", b"not json", b"\xff"])
async def test_signed_body_of_the_wrong_shape_is_a_payload_error(body):
    with pytest.raises(WebhookPayloadError) as caught:
        await provider().handle(signed(body), body)
    assert caught.value.status_code == 400


@pytest.mark.parametrize("key", [None, ""])
async def test_unconfigured_provider_is_disabled(key):
    body = json.dumps(BATCH).encode()
    with pytest.raises(WebhookDisabled) as caught:
        await provider(key).handle(signed(body), body)
    assert caught.value.status_code == 404


def test_unusable_key_fails_at_startup():
    with pytest.raises(ValueError, match="sendgrid_webhook_public_key"):
        SendGridProvider("definitely-not-a-key")
