import base64
import json
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from tests.webhooks.signing import basic_auth
from webhooks import build_providers
from webhooks.errors import WebhookAuthError, WebhookDisabled, WebhookPayloadError

USER, PASSWORD = "drip-hook", "8fKvT2qLwP9r"
SND = "snd_01JD8Q4W7M2K9X3V5B6N8P0R1T"
AUTH = basic_auth(USER, PASSWORD)
MESSAGE_ID = "6f1c2d9e-4b7a-4c31-9a8e-1f2b3c4d5e6f"
METADATA = {"drip_delivery_id": SND, "campaign_id": "12"}


def provider(user=USER, password=PASSWORD):
    settings = SimpleNamespace(postmark_webhook_user=user, postmark_webhook_password=password)
    return build_providers(settings)["postmark"]


async def handle(record, headers=AUTH):
    return await provider().handle(headers, json.dumps(record).encode())


CLICK = {
    "RecordType": "Click",
    "MessageStream": "outbound",
    "ClickLocation": "HTML",
    "OriginalLink": "https://app.example.com/onboarding/step-2",
    "MessageID": MESSAGE_ID,
    "Recipient": "Maya.Lopez@example.net",
    "ReceivedAt": "2024-11-26T11:25:02.4173920Z",
    "Tag": "drip-campaign-12",
    "UserAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/130.0",
    "Platform": "Desktop",
    "Client": {"Name": "Chrome 130.0", "Company": "Google", "Family": "Chrome"},
    "OS": {"Name": "Windows 10", "Company": "Microsoft Corporation", "Family": "Windows 10"},
    "Geo": {"CountryISOCode": "PT", "Country": "Portugal", "City": "Lisbon", "IP": "203.0.113.77"},
    "Metadata": METADATA,
}
OPEN = {
    "RecordType": "Open",
    "MessageStream": "outbound",
    "FirstOpen": True,
    "Client": {"Name": "Apple Mail", "Company": "Apple", "Family": "Apple Mail"},
    "OS": {"Name": "iOS 17", "Company": "Apple", "Family": "iOS"},
    "Platform": "Mobile",
    "UserAgent": "Mozilla/5.0",
    "ReadSeconds": 5,
    "Geo": {},
    "MessageID": MESSAGE_ID,
    "Metadata": METADATA,
    "ReceivedAt": "2024-11-26T06:20:00.12-05:00",
    "Tag": "drip-campaign-12",
    "Recipient": "maya.lopez@example.net",
}
DELIVERY = {
    "RecordType": "Delivery",
    "ServerID": 88231,
    "MessageStream": "outbound",
    "MessageID": MESSAGE_ID,
    "Recipient": "maya.lopez@example.net",
    "Tag": "drip-campaign-12",
    "DeliveredAt": "2024-11-26T11:04:07Z",
    "Details": "Test delivery webhook details",
    "Metadata": METADATA,
}
BOUNCE = {
    "RecordType": "Bounce",
    "ID": 3317204459,
    "Type": "HardBounce",
    "TypeCode": 1,
    "Name": "Hard bounce",
    "MessageID": "0a7e9c2b-55d1-4e08-b3c6-7d8e9f0a1b2c",
    "MessageStream": "outbound",
    "ServerID": 88231,
    "Email": "Old.Account@example.org",
    "From": "hello@drip.example.com",
    "BouncedAt": "2024-11-26T11:04:51.2209000Z",
    "Inactive": True,
    "CanActivate": True,
    "DumpAvailable": False,
    "Description": "The server was unable to deliver your message (ex: unknown user).",
    "Details": "smtp;550 5.1.1 <old.account@example.org>: Recipient address rejected",
    "Subject": "Welcome to Example",
    "Metadata": {"drip_delivery_id": "snd_01JD8Q52ZP0N7H1C4E6G8J2K4M"},
}
SPAM_COMPLAINT = {
    "RecordType": "SpamComplaint",
    "ID": 3317204460,
    "Type": "SpamComplaint",
    "TypeCode": 512,
    "MessageID": MESSAGE_ID,
    "MessageStream": "outbound",
    "Email": "maya.lopez@example.net",
    "BouncedAt": "2024-11-27T09:00:00Z",
    "Inactive": True,
    "Metadata": METADATA,
}
SUBSCRIPTION_CHANGE = {
    "RecordType": "SubscriptionChange",
    "MessageID": MESSAGE_ID,
    "ServerID": 88231,
    "MessageStream": "outbound",
    "ChangedAt": "2024-11-27T10:00:00Z",
    "Recipient": "maya.lopez@example.net",
    "Origin": "Recipient",
    "SuppressSending": True,
    "SuppressionReason": "ManualSuppression",
    "Tag": "drip-campaign-12",
    "Metadata": METADATA,
}


async def test_click():
    [event] = await handle(CLICK)
    assert event.provider == "postmark"
    assert event.type == "click"
    assert event.raw_type == "Click"
    assert event.url == "https://app.example.com/onboarding/step-2"
    assert event.delivery_id == SND
    assert event.recipient == "maya.lopez@example.net"
    assert event.occurred_at == datetime(2024, 11, 26, 11, 25, 2, 417392, tzinfo=UTC)
    assert event.machine is False
    assert event.raw == CLICK
    assert event.dedupe_key.startswith("sha256:")


async def test_open_time_with_offset_is_converted_to_utc():
    [event] = await handle(OPEN)
    assert event.type == "open"
    assert event.machine is False  # Postmark has no machine-open flag
    assert event.url is None
    assert event.occurred_at == datetime(2024, 11, 26, 11, 20, 0, 120000, tzinfo=UTC)
    assert event.occurred_at.utcoffset().total_seconds() == 0


async def test_delivery():
    [event] = await handle(DELIVERY)
    assert (event.type, event.delivery_id, event.recipient) == (
        "delivered",
        SND,
        "maya.lopez@example.net",
    )
    assert event.occurred_at == datetime(2024, 11, 26, 11, 4, 7, tzinfo=UTC)


async def test_hard_bounce_uses_postmark_id_as_dedupe_key():
    [event] = await handle(BOUNCE)
    assert event.type == "bounce_hard"
    assert event.dedupe_key == "3317204459"
    assert event.delivery_id == "snd_01JD8Q52ZP0N7H1C4E6G8J2K4M"
    assert event.recipient == "old.account@example.org"
    assert event.bounce == {
        "kind": "hard",
        "smtp_status": None,
        "diagnostic": "smtp;550 5.1.1 <old.account@example.org>: Recipient address rejected",
    }


@pytest.mark.parametrize(
    ("bounce_type", "inactive", "expected"),
    [
        ("HardBounce", False, "bounce_hard"),
        ("BadEmailAddress", False, "bounce_hard"),
        ("SoftBounce", False, "bounce_soft"),
        ("Transient", False, "bounce_soft"),
        ("DnsError", False, "bounce_soft"),
        ("SpamNotification", False, "bounce_soft"),
        ("VirusNotification", False, "bounce_soft"),
        ("SoftBounce", True, "bounce_hard"),  # Inactive: Postmark suppressed the address
        ("SpamNotification", True, "bounce_hard"),
        ("AutoResponder", False, None),
        ("AddressChange", False, None),
        ("ChallengeVerification", False, None),
        ("OpenRelayTest", False, None),
    ],
)
async def test_bounce_type_table(bounce_type, inactive, expected):
    [event] = await handle({**BOUNCE, "Type": bounce_type, "Inactive": inactive})
    assert event.type == expected
    assert event.raw_type == "Bounce"
    if expected is None:
        assert event.bounce is None
    else:
        assert event.bounce["kind"] == expected.removeprefix("bounce_")


async def test_spam_complaint():
    [event] = await handle(SPAM_COMPLAINT)
    assert (event.type, event.dedupe_key, event.delivery_id) == ("complaint", "3317204460", SND)
    assert event.occurred_at == datetime(2024, 11, 27, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("suppress", "reason", "expected"),
    [
        (True, "ManualSuppression", "unsubscribe"),
        (True, "HardBounce", "bounce_hard"),
        (True, "SpamComplaint", "complaint"),
        (False, None, None),  # reactivation
    ],
)
async def test_subscription_change(suppress, reason, expected):
    record = {**SUBSCRIPTION_CHANGE, "SuppressSending": suppress, "SuppressionReason": reason}
    [event] = await handle(record)
    assert event.type == expected
    assert event.delivery_id == SND
    assert event.occurred_at == datetime(2024, 11, 27, 10, 0, tzinfo=UTC)


async def test_hashed_dedupe_key_is_stable_and_distinguishes_events():
    [first] = await handle(CLICK)
    [retry] = await handle(dict(CLICK))
    [other_link] = await handle({**CLICK, "OriginalLink": "https://app.example.com/pricing"})
    [later] = await handle({**CLICK, "ReceivedAt": "2024-11-26T11:26:00Z"})
    assert first.dedupe_key == retry.dedupe_key
    assert len({first.dedupe_key, other_link.dedupe_key, later.dedupe_key}) == 3


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic_auth(USER, "wrong-password"),
        basic_auth("someone-else", PASSWORD),
        basic_auth(USER, PASSWORD + "x"),
        basic_auth("", ""),
        {"authorization": "Basic not-base64!"},
        {"authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"authorization": "Bearer " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()},
    ],
    ids=[
        "missing",
        "wrong-password",
        "wrong-user",
        "longer-password",
        "empty",
        "garbage",
        "no-colon",
        "wrong-scheme",
    ],
)
async def test_bad_credentials_are_rejected(headers):
    with pytest.raises(WebhookAuthError) as caught:
        await handle(CLICK, headers)
    assert caught.value.status_code == 401


async def test_authorization_header_is_case_insensitive():
    headers = {"Authorization": AUTH["authorization"].replace("Basic", "basic")}
    assert len(await handle(CLICK, headers)) == 1


async def test_credentials_are_checked_before_the_body_is_parsed():
    with pytest.raises(WebhookAuthError):
        await provider().handle({}, b"not json")


async def test_inbound_message_payload_is_rejected():
    inbound = {
        "FromName": "Maya",
        "From": "maya.lopez@example.net",
        "FromFull": {"Email": "maya.lopez@example.net", "Name": "Maya"},
        "To": "inbound@drip.example.com",
        "Subject": "Re: hello",
        "MessageID": MESSAGE_ID,
        "TextBody": "hi",
    }
    with pytest.raises(WebhookPayloadError, match="inbound"):
        await handle(inbound)


@pytest.mark.parametrize(
    "record",
    [{**CLICK, "RecordType": "Inbound"}, {"MessageID": MESSAGE_ID}, [CLICK], "Click"],
    ids=["unknown-record-type", "no-record-type", "array", "string"],
)
async def test_unexpected_payload_is_rejected(record):
    with pytest.raises(WebhookPayloadError):
        await handle(record)


async def test_bad_json_after_auth_is_a_payload_error():
    with pytest.raises(WebhookPayloadError):
        await provider().handle(AUTH, b"{not json")


@pytest.mark.parametrize(("user", "password"), [(None, None), (USER, None), ("", PASSWORD)])
async def test_unconfigured_provider_is_disabled(user, password):
    with pytest.raises(WebhookDisabled):
        await provider(user, password).handle(AUTH, json.dumps(CLICK).encode())
