import json
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from tests.webhooks.signing import resend_secret, sign_resend
from webhooks import build_providers
from webhooks.errors import WebhookAuthError, WebhookDisabled, WebhookPayloadError
from webhooks.resend import ResendProvider

SECRET = resend_secret()
SND = "snd_01JD8Q4W7M2K9X3V5B6N8P0R1T"
MSG = "msg_2pQk7cZ9fXv3LwR1tY8bN4mHs0E"


def provider(secret: str | None = SECRET):
    return build_providers(SimpleNamespace(resend_webhook_secret=secret))["resend"]


def payload(event_type: str, **data):
    return {
        "type": event_type,
        "created_at": "2024-11-26T11:25:02.981Z",
        "data": {
            "email_id": "4e9b1c7a-2d3f-4a5b-8c6d-7e8f9a0b1c2d",
            "created_at": "2024-11-26T11:04:05.112Z",
            "from": "Example <hello@drip.example.com>",
            "to": ["Maya.Lopez@example.net"],
            "subject": "Step 2: connect your data",
            "tags": [
                {"name": "drip_delivery_id", "value": SND},
                {"name": "campaign_id", "value": "12"},
            ],
            **data,
        },
    }


CLICKED = payload(
    "email.clicked",
    headers=[{"name": "X-Drip-Delivery-Id", "value": SND}],
    click={
        "ipAddress": "203.0.113.77",
        "link": "https://app.example.com/onboarding/step-2",
        "timestamp": "2024-11-26T11:25:02.412Z",
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/132.0",
    },
)
BOUNCED = payload(
    "email.bounced",
    bounce={
        "type": "Permanent",
        "subType": "General",
        "message": "The recipient's email provider sent a hard bounce message.",
        "diagnosticCode": ["smtp; 550 5.1.1 user unknown"],
    },
)


def signed(body: bytes, msg_id: str = MSG, timestamp: int | None = None, secret: str = SECRET):
    return sign_resend(secret, msg_id, timestamp or int(time.time()), body)


async def handle(event, **kwargs):
    body = json.dumps(event).encode()
    return await provider().handle(signed(body, **kwargs), body)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (payload("email.delivered"), "delivered"),
        (payload("email.opened"), "open"),
        (CLICKED, "click"),
        (BOUNCED, "bounce_hard"),
        (
            payload("email.bounced", bounce={"type": "Undetermined", "subType": "Undetermined"}),
            "bounce_hard",
        ),
        (payload("email.delivery_delayed"), "bounce_soft"),
        (payload("email.complained"), "complaint"),
        (payload("email.suppressed"), "bounce_hard"),
        (payload("email.sent"), None),
        (payload("email.scheduled"), None),
        (payload("email.failed", failed={"reason": "reached_daily_quota"}), None),
        (payload("domain.updated"), None),
    ],
    ids=lambda v: v["type"] if isinstance(v, dict) else str(v),
)
async def test_event_mapping(event, expected):
    [result] = await handle(event)
    assert result.provider == "resend"
    assert result.type == expected
    assert result.raw_type == event["type"]
    assert result.dedupe_key == MSG
    assert result.delivery_id == SND
    assert result.recipient == "maya.lopez@example.net"
    assert result.occurred_at == datetime(2024, 11, 26, 11, 25, 2, 981000, tzinfo=UTC)
    assert result.raw == event


async def test_click_url_and_bounce_details():
    [click] = await handle(CLICKED)
    assert click.url == "https://app.example.com/onboarding/step-2"
    assert click.machine is False
    [bounce] = await handle(BOUNCED)
    assert bounce.bounce == {
        "kind": "hard",
        "smtp_status": None,
        "diagnostic": "smtp; 550 5.1.1 user unknown",
    }
    assert bounce.url is None
    [delayed] = await handle(payload("email.delivery_delayed"))
    assert delayed.bounce["kind"] == "soft"


@pytest.mark.parametrize(("unsubscribed", "expected"), [(True, "unsubscribe"), (False, None)])
async def test_contact_updated(unsubscribed, expected):
    event = {
        "type": "contact.updated",
        "created_at": "2024-11-27T10:00:00.000Z",
        "data": {
            "id": "e169aa45-1ecf-4183-9955-b1499d5701d3",
            "audience_id": "78261eea-8f8b-4381-83c6-79fa7120f1cf",
            "created_at": "2024-10-10T15:11:04.110Z",
            "updated_at": "2024-11-27T10:00:00.000Z",
            "email": "Maya.Lopez@example.net",
            "unsubscribed": unsubscribed,
        },
    }
    [result] = await handle(event)
    assert result.type == expected
    assert result.recipient == "maya.lopez@example.net"
    assert result.delivery_id is None


async def test_tags_as_a_flat_object():
    event = payload("email.opened", tags={"drip_delivery_id": SND, "campaign_id": "12"})
    [result] = await handle(event)
    assert result.delivery_id == SND


@pytest.mark.parametrize("name", ["X-Drip-Delivery", "x-drip-delivery-id"])
async def test_headers_are_the_fallback_for_the_delivery_id_and_message_id(name):
    # X-Drip-Delivery now; messages sent before the rename carry X-Drip-Delivery-Id.
    event = payload(
        "email.delivered",
        tags=[],
        headers=[
            {"name": name, "value": SND},
            {"name": "Message-ID", "value": f"<{SND}@mail.drip.example.com>"},
        ],
    )
    [result] = await handle(event)
    assert result.delivery_id == SND
    assert result.message_id == f"{SND}@mail.drip.example.com"


async def test_no_recipient_when_the_message_had_several():
    event = payload("email.opened", to=["a@example.net", "b@example.net"])
    [result] = await handle(event)
    assert result.recipient is None


async def test_any_of_several_signatures_may_match():
    body = json.dumps(CLICKED).encode()
    headers = signed(body)
    old = signed(body, secret=resend_secret())["svix-signature"]
    headers["svix-signature"] = f"{old} v2,whatever {headers['svix-signature']}"
    assert len(await provider().handle(headers, body)) == 1


async def test_headers_are_case_insensitive():
    body = json.dumps(CLICKED).encode()
    headers = {k.upper(): v for k, v in signed(body).items()}
    assert len(await provider().handle(headers, body)) == 1


async def test_forged_signature_is_rejected():
    body = json.dumps(CLICKED).encode()
    with pytest.raises(WebhookAuthError, match="invalid signature"):
        await provider().handle(signed(body, secret=resend_secret()), body)


async def test_tampered_body_is_rejected():
    body = json.dumps(CLICKED).encode()
    headers = signed(body)
    with pytest.raises(WebhookAuthError):
        await provider().handle(headers, body.replace(b"email.clicked", b"email.complained"))


async def test_tampered_id_is_rejected():
    body = json.dumps(CLICKED).encode()
    headers = {**signed(body), "svix-id": "msg_other"}
    with pytest.raises(WebhookAuthError):
        await provider().handle(headers, body)


@pytest.mark.parametrize(
    "signature",
    ["", "v1,", "v1,not-base64!", "K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=", "v2,abc"],
)
async def test_malformed_signature_header_is_rejected(signature):
    body = json.dumps(CLICKED).encode()
    headers = {**signed(body), "svix-signature": signature}
    with pytest.raises(WebhookAuthError):
        await provider().handle(headers, body)


@pytest.mark.parametrize("missing", ["svix-id", "svix-timestamp", "svix-signature"])
async def test_missing_header_is_rejected(missing):
    body = json.dumps(CLICKED).encode()
    headers = signed(body)
    del headers[missing]
    with pytest.raises(WebhookAuthError):
        await provider().handle(headers, body)


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-240, True), (240, True), (-360, False), (360, False), (-86400, False)],
)
async def test_five_minute_tolerance_both_ways(offset, accepted):
    body = json.dumps(CLICKED).encode()
    headers = signed(body, timestamp=int(time.time()) + offset)
    if accepted:
        assert len(await provider().handle(headers, body)) == 1
    else:
        with pytest.raises(WebhookAuthError):
            await provider().handle(headers, body)


async def test_non_numeric_timestamp_is_rejected():
    body = json.dumps(CLICKED).encode()
    headers = {**signed(body), "svix-timestamp": "yesterday"}
    with pytest.raises(WebhookAuthError):
        await provider().handle(headers, body)


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"type": "email.sent"}', b'{"type": 1, "data": {}}'],
)
async def test_signed_body_of_the_wrong_shape_is_a_payload_error(body):
    with pytest.raises(WebhookPayloadError):
        await provider().handle(signed(body), body)


@pytest.mark.parametrize("secret", [None, ""])
async def test_unconfigured_provider_is_disabled(secret):
    body = json.dumps(CLICKED).encode()
    with pytest.raises(WebhookDisabled):
        await provider(secret).handle(signed(body), body)


def test_secret_without_prefix_is_accepted_and_garbage_refused():
    ResendProvider(SECRET.removeprefix("whsec_"))
    with pytest.raises(ValueError, match="resend_webhook_secret"):
        ResendProvider("whsec_not base64!")
