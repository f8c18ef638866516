import json
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from tests.webhooks.signing import mailgun_body, sign_mailgun
from webhooks import build_providers
from webhooks.errors import WebhookAuthError, WebhookDisabled, WebhookPayloadError
from webhooks.mailgun import MailgunProvider

KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
SND = "snd_01JD8Q4W7M2K9X3V5B6N8P0R1T"
MSG_ID = f"{SND}@mail.drip.example.com"


def provider(key: str | None = KEY):
    return build_providers(SimpleNamespace(mailgun_webhook_signing_key=key))["mailgun"]


def event_data(event: str, **fields):
    return {
        "event": event,
        "id": "Ase7i2zsRYeDXztHGENqRA",
        "timestamp": 1732620302.412,
        "recipient": "Maya.Lopez@example.net",
        "recipient-domain": "example.net",
        "message": {"headers": {"message-id": MSG_ID}},
        "tags": ["drip", "campaign-12"],
        "campaigns": [],
        "user-variables": {"drip_delivery_id": SND, "campaign_id": "12"},
        **fields,
    }


CLICKED = event_data(
    "clicked",
    ip="203.0.113.77",
    url="https://app.example.com/onboarding/step-2",
    **{
        "client-info": {
            "client-type": "browser",
            "client-os": "iOS",
            "device-type": "mobile",
            "client-name": "Mobile Safari",
            "user-agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X)",
        },
        "geolocation": {"country": "PT", "region": "11", "city": "Lisbon"},
    },
)
FAILED_PERMANENT = event_data(
    "failed",
    severity="permanent",
    reason="bounce",
    **{
        "delivery-status": {
            "code": 550,
            "message": "5.1.1 The email account that you tried to reach does not exist.",
            "attempt-no": 1,
        }
    },
)
FAILED_TEMPORARY = event_data(
    "failed",
    severity="temporary",
    reason="greylisted",
    **{
        "delivery-status": {
            "code": 452,
            "enhanced-code": "4.2.2",
            "message": "4.2.2 The email account that you tried to reach is over quota.",
            "attempt-no": 2,
        }
    },
)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (event_data("delivered", **{"delivery-status": {"code": 250, "tls": True}}), "delivered"),
        (event_data("opened", ip="17.58.101.23"), "open"),
        (CLICKED, "click"),
        (FAILED_PERMANENT, "bounce_hard"),
        (FAILED_TEMPORARY, "bounce_soft"),
        (event_data("complained"), "complaint"),
        (event_data("unsubscribed"), "unsubscribe"),
        (event_data("accepted", method="HTTP"), None),
        (event_data("rejected", reject={"reason": "tracking domain is not verified"}), None),
        (event_data("stored"), None),
    ],
    ids=lambda v: v if isinstance(v, str) or v is None else v["event"],
)
async def test_event_mapping(data, expected):
    token = "9c1f4e2a7b3d5f60812a4c6e8b0d2f4a6c8e0b2d4f6a8c0e1f"
    [event] = await provider().handle({}, mailgun_body(KEY, data, token=token))
    assert event.provider == "mailgun"
    assert event.type == expected
    assert event.raw_type == data["event"]
    assert event.dedupe_key == token
    assert event.delivery_id == SND
    assert event.message_id == MSG_ID
    assert event.recipient == "maya.lopez@example.net"
    assert event.occurred_at == datetime(2024, 11, 26, 11, 25, 2, 412000, tzinfo=UTC)
    assert event.raw == data
    assert event.machine is False


async def test_click_url_and_bounce_details():
    [click] = await provider().handle({}, mailgun_body(KEY, CLICKED))
    assert click.url == "https://app.example.com/onboarding/step-2"
    [hard] = await provider().handle({}, mailgun_body(KEY, FAILED_PERMANENT))
    assert hard.bounce == {
        "kind": "hard",
        "smtp_status": "550",
        "diagnostic": "5.1.1 The email account that you tried to reach does not exist.",
    }
    assert hard.url is None
    [soft] = await provider().handle({}, mailgun_body(KEY, FAILED_TEMPORARY))
    assert soft.bounce["kind"] == "soft"
    assert soft.bounce["smtp_status"] == "4.2.2"


async def test_message_id_is_the_fallback_handle():
    data = event_data("opened")
    del data["user-variables"]
    [event] = await provider().handle({}, mailgun_body(KEY, data))
    assert event.delivery_id is None
    assert event.message_id == MSG_ID


async def test_replayed_signature_block_always_maps_to_the_same_dedupe_key():
    # The signature does not cover event-data: a captured block can be glued to another body.
    # Keying on the token means the database's UNIQUE(provider, dedupe_key) stops a second event.
    block = sign_mailgun(KEY, int(time.time()), "a" * 50)
    genuine = json.dumps({"signature": block, "event-data": event_data("opened")}).encode()
    forged = json.dumps({"signature": block, "event-data": event_data("complained")}).encode()
    [first] = await provider().handle({}, genuine)
    [second] = await provider().handle({}, forged)
    assert first.dedupe_key == second.dedupe_key == "a" * 50


def signed_with(**changes) -> bytes:
    block = {**sign_mailgun(KEY, int(time.time()), "b" * 50), **changes}
    return json.dumps({"signature": block, "event-data": CLICKED}).encode()


@pytest.mark.parametrize(
    "body",
    [
        mailgun_body("some-other-key", CLICKED),
        signed_with(token="c" * 50),
        signed_with(timestamp=str(int(time.time()) - 1)),
        signed_with(signature="0" * 64),
        signed_with(signature="not hex"),
        signed_with(signature=None),
        signed_with(timestamp=None),
        signed_with(token=""),
        json.dumps({"event-data": CLICKED}).encode(),
        json.dumps({"signature": "abc", "event-data": CLICKED}).encode(),
        json.dumps([1, 2]).encode(),
        b"not json",
        b"",
    ],
    ids=[
        "wrong-key",
        "tampered-token",
        "tampered-timestamp",
        "wrong-signature",
        "garbage-signature",
        "null-signature",
        "null-timestamp",
        "empty-token",
        "no-signature-block",
        "signature-not-object",
        "array",
        "not-json",
        "empty",
    ],
)
async def test_bad_or_missing_signature_is_rejected_with_one_answer(body):
    with pytest.raises(WebhookAuthError) as caught:
        await provider().handle({}, body)
    assert str(caught.value) == "invalid signature"
    assert caught.value.status_code == 401


async def test_uppercase_hex_signature_is_accepted():
    block = sign_mailgun(KEY, int(time.time()), "d" * 50)
    block["signature"] = block["signature"].upper()
    body = json.dumps({"signature": block, "event-data": CLICKED}).encode()
    assert len(await provider().handle({}, body)) == 1


async def test_integer_timestamp_is_accepted():
    now = int(time.time())
    block = {**sign_mailgun(KEY, now, "e" * 50), "timestamp": now}
    body = json.dumps({"signature": block, "event-data": CLICKED}).encode()
    assert len(await provider().handle({}, body)) == 1


@pytest.mark.parametrize(
    ("age", "accepted"),
    [
        (timedelta(hours=23), True),  # Mailgun retries for ~8 h and processing can lag
        (timedelta(hours=25), False),
        (timedelta(minutes=-4), True),  # small clock skew
        (timedelta(minutes=-10), False),
    ],
)
async def test_freshness_window(age, accepted):
    timestamp = int(time.time() - age.total_seconds())
    body = mailgun_body(KEY, CLICKED, timestamp=timestamp)
    if accepted:
        assert len(await provider().handle({}, body)) == 1
    else:
        with pytest.raises(WebhookAuthError):
            await provider().handle({}, body)


async def test_freshness_window_is_configurable():
    strict = MailgunProvider(KEY, max_age=timedelta(minutes=10))
    body = mailgun_body(KEY, CLICKED, timestamp=int(time.time()) - 3600)
    with pytest.raises(WebhookAuthError):
        await strict.handle({}, body)


async def test_fixed_clock():
    signed_at = datetime(2024, 11, 26, 11, 25, 3, tzinfo=UTC)
    mailgun = MailgunProvider(KEY, clock=lambda: signed_at + timedelta(hours=1))
    body = mailgun_body(KEY, CLICKED, timestamp=int(signed_at.timestamp()))
    assert len(await mailgun.handle({}, body)) == 1


@pytest.mark.parametrize(
    "event_data_value", [None, [], "clicked", {"id": "x"}], ids=["null", "list", "str", "no-event"]
)
async def test_missing_event_data_after_auth_is_a_payload_error(event_data_value):
    block = sign_mailgun(KEY, int(time.time()), "f" * 50)
    body = json.dumps({"signature": block, "event-data": event_data_value}).encode()
    with pytest.raises(WebhookPayloadError):
        await provider().handle({}, body)


@pytest.mark.parametrize("key", [None, ""])
async def test_unconfigured_provider_is_disabled(key):
    with pytest.raises(WebhookDisabled):
        await provider(key).handle({}, mailgun_body(KEY, CLICKED))


async def test_the_token_is_the_events_nonce_and_the_signature_cannot_predate_the_event():
    body = mailgun_body(KEY, CLICKED, token="t" * 50)
    [event] = await provider().handle({}, body)
    assert event.nonce == "t" * 50 and event.dedupe_key == "t" * 50
    # A signature made before the event happened was made for another event.
    signed_at = int(time.time()) - 3600
    later = {**CLICKED, "timestamp": signed_at + 1800}
    with pytest.raises(WebhookAuthError, match="predates"):
        await provider().handle({}, mailgun_body(KEY, later, timestamp=signed_at))
    earlier = {**CLICKED, "timestamp": signed_at - 60}
    assert len(await provider().handle({}, mailgun_body(KEY, earlier, timestamp=signed_at))) == 1
