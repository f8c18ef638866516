import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from tests.webhooks.signing import (
    SNS_CERT_URL,
    make_sns_certificate,
    sign_sns,
    sns_envelope,
    sns_headers,
)
from webhooks import build_providers
from webhooks.errors import WebhookAuthError, WebhookDisabled, WebhookPayloadError
from webhooks.ses import SesProvider, is_sns_url

TOPIC = "arn:aws:sns:eu-west-1:123456789012:drip-ses-events"
OTHER_TOPIC = "arn:aws:sns:eu-west-1:999999999999:someone-elses-topic"
SND = "snd_01JD8Q4W7M2K9X3V5B6N8P0R1T"
SIGNING_KEY, CERT_PEM = make_sns_certificate()
OTHER_KEY, _ = make_sns_certificate()


class FakeFetcher:
    def __init__(self, pem: bytes = CERT_PEM):
        self.pem = pem
        self.calls: list[str] = []

    async def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        return self.pem


class FakeConfirmer:
    def __init__(self):
        self.calls: list[str] = []

    async def __call__(self, url: str) -> None:
        self.calls.append(url)


def make(topics=(TOPIC,), **kwargs):
    fetcher, confirmer = FakeFetcher(), FakeConfirmer()
    settings = SimpleNamespace(ses_topic_arns=list(topics))
    ses = build_providers(settings, sns_cert_fetcher=fetcher, sns_confirmer=confirmer)["ses"]
    return ses, fetcher, confirmer


def mail(**tags):
    return {
        "timestamp": "2024-11-26T11:04:05.000Z",
        "source": "hello@drip.example.com",
        "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/drip.example.com",
        "sendingAccountId": "123456789012",
        "messageId": "0102019365a1b2c3-4d5e6f70-8192-4a3b-9c4d-5e6f7a8b9c0d-000000",
        "destination": ["Maya.Lopez@example.net"],
        "headersTruncated": False,
        "tags": {
            "ses:configuration-set": ["drip-prod"],
            "drip_delivery_id": [SND],
            "campaign_id": ["12"],
            **tags,
        },
        "commonHeaders": {
            "from": ["Example <hello@drip.example.com>"],
            "to": ["maya.lopez@example.net"],
            "messageId": f"<{SND}@mail.drip.example.com>",
            "subject": "Step 2: connect your data",
        },
    }


def recipient_list(status, diagnostic):
    return [
        {
            "emailAddress": "Maya.Lopez@example.net",
            "action": "failed",
            "status": status,
            "diagnosticCode": diagnostic,
        }
    ]


T = "2024-11-26T11:25:02.412Z"
CLICK = {
    "eventType": "Click",
    "mail": mail(),
    "click": {
        "timestamp": T,
        "ipAddress": "203.0.113.77",
        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15",
        "link": "https://app.example.com/onboarding/step-2",
        "linkTags": {"cta": ["primary"]},
    },
}


def bounce(bounce_type, sub_type, status="5.1.1"):
    return {
        "eventType": "Bounce",
        "mail": mail(),
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": sub_type,
            "bouncedRecipients": recipient_list(status, "smtp; 550 5.1.1 user unknown"),
            "timestamp": T,
            "feedbackId": "0102019365a1b2c3-feedback-000000",
            "reportingMTA": "dns; mx.example.org",
        },
    }


def complaint(feedback_type):
    return {
        "eventType": "Complaint",
        "mail": mail(),
        "complaint": {
            "feedbackId": "0102019365a1b2c3-complaint-000000",
            "complaintSubType": None,
            "complainedRecipients": [{"emailAddress": "maya.lopez@example.net"}],
            "timestamp": T,
            "userAgent": "Yahoo!-Mail-Feedback/2.0",
            "complaintFeedbackType": feedback_type,
            "arrivalDate": T,
        },
    }


def subscription(unsubscribe_all, topic_status):
    return {
        "eventType": "Subscription",
        "mail": mail(),
        "subscription": {
            "contactList": "drip-newsletter",
            "timestamp": T,
            "source": "UnsubscribeHeader",
            "newTopicPreferences": {
                "unsubscribeAll": unsubscribe_all,
                "topicSubscriptionStatus": [
                    {"topicName": "updates", "subscriptionStatus": topic_status}
                ],
            },
            "oldTopicPreferences": {
                "unsubscribeAll": False,
                "topicSubscriptionStatus": [
                    {"topicName": "updates", "subscriptionStatus": "OptIn"}
                ],
            },
        },
    }


EVENTS = [
    (
        {
            "eventType": "Delivery",
            "mail": mail(),
            "delivery": {
                "timestamp": T,
                "processingTimeMillis": 546,
                "recipients": ["maya.lopez@example.net"],
                "smtpResponse": "250 2.6.0 Message received",
                "reportingMTA": "a8-70.smtp-out.amazonses.com",
            },
        },
        "delivered",
    ),
    (
        {
            "eventType": "Open",
            "mail": mail(),
            "open": {"ipAddress": "17.58.101.23", "timestamp": T, "userAgent": "Mozilla/5.0"},
        },
        "open",
    ),
    (CLICK, "click"),
    (bounce("Permanent", "General"), "bounce_hard"),
    (bounce("Permanent", "OnAccountSuppressionList"), "bounce_hard"),
    (bounce("Transient", "MailboxFull", "4.2.2"), "bounce_soft"),
    (bounce("Undetermined", "Undetermined"), "bounce_soft"),
    (complaint("abuse"), "complaint"),
    (complaint(None), "complaint"),
    (complaint("not-spam"), None),
    (
        {
            "eventType": "DeliveryDelay",
            "mail": mail(),
            "deliveryDelay": {
                "timestamp": T,
                "delayType": "TransientCommunicationFailure",
                "expirationTime": "2024-11-27T11:04:05.000Z",
                "delayedRecipients": recipient_list("4.4.1", "smtp; 421 4.4.1 try later"),
            },
        },
        "bounce_soft",
    ),
    (subscription(True, "OptOut"), "unsubscribe"),
    (subscription(False, "OptOut"), "unsubscribe"),
    (subscription(False, "OptIn"), None),
    ({"eventType": "Send", "mail": mail(), "send": {}}, None),
    ({"eventType": "Reject", "mail": mail(), "reject": {"reason": "Bad content"}}, None),
    (
        {
            "eventType": "Rendering Failure",
            "mail": mail(),
            "failure": {"errorMessage": "Attribute 'name' is not present", "templateName": "t"},
        },
        None,
    ),
]


async def deliver(ses, message, *, version="2", topic=TOPIC, **kwargs):
    envelope = sign_sns(sns_envelope(message, topic_arn=topic, **kwargs), SIGNING_KEY, version)
    return envelope, await ses.handle(sns_headers(envelope), json.dumps(envelope).encode())


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize(
    ("message", "expected"), EVENTS, ids=[f"{m['eventType']}-{e}" for m, e in EVENTS]
)
async def test_event_mapping(message, expected, version):
    ses, fetcher, _ = make()
    envelope, [event] = await deliver(ses, message, version=version)
    assert event.provider == "ses"
    assert event.type == expected
    assert event.raw_type == message["eventType"]
    assert event.dedupe_key == envelope["MessageId"]
    assert event.delivery_id == SND
    assert event.message_id == f"{SND}@mail.drip.example.com"
    assert event.recipient == "maya.lopez@example.net"
    assert event.occurred_at is not None and event.occurred_at.tzinfo is not None
    assert event.raw == message
    assert fetcher.calls == [SNS_CERT_URL]


async def test_event_details():
    ses, _, _ = make()
    _, [click] = await deliver(ses, CLICK)
    assert click.url == "https://app.example.com/onboarding/step-2"
    assert click.occurred_at == datetime(2024, 11, 26, 11, 25, 2, 412000, tzinfo=UTC)
    _, [hard] = await deliver(ses, bounce("Permanent", "General"))
    assert hard.url is None
    assert hard.bounce == {
        "kind": "hard",
        "smtp_status": "5.1.1",
        "diagnostic": "smtp; 550 5.1.1 user unknown",
    }
    _, [soft] = await deliver(ses, bounce("Transient", "MailboxFull", "4.2.2"))
    assert soft.bounce["kind"] == "soft"
    assert soft.bounce["smtp_status"] == "4.2.2"


async def test_legacy_notification_without_tags_falls_back_to_message_id():
    legacy_mail = mail()
    del legacy_mail["tags"]
    message = {
        "notificationType": "Bounce",
        "mail": legacy_mail,
        "bounce": bounce("Permanent", "NoEmail")["bounce"],
    }
    ses, _, _ = make()
    _, [event] = await deliver(ses, message)
    assert event.type == "bounce_hard"
    assert event.raw_type == "Bounce"
    assert event.delivery_id is None
    assert event.message_id == f"{SND}@mail.drip.example.com"


async def test_ses_validation_notice_is_ignored():
    ses, _, _ = make()
    message = "Successfully validated SNS topic for Amazon SES event publishing."
    _, events = await deliver(ses, message)
    assert events == []


async def test_notification_without_subject_verifies():
    ses, _, _ = make()
    envelope = sns_envelope(CLICK, topic_arn=TOPIC)
    del envelope["Subject"]
    envelope = sign_sns(envelope, SIGNING_KEY, "2")
    assert len(await ses.handle(sns_headers(envelope), json.dumps(envelope).encode())) == 1


async def test_signature_version_defaults_to_1():
    ses, _, _ = make()
    envelope = sign_sns(sns_envelope(CLICK, topic_arn=TOPIC), SIGNING_KEY, "1")
    del envelope["SignatureVersion"]
    assert len(await ses.handle({}, json.dumps(envelope).encode())) == 1


async def test_certificate_is_fetched_once_per_url():
    ses, fetcher, _ = make()
    for _ in range(3):
        await deliver(ses, CLICK)
    assert fetcher.calls == [SNS_CERT_URL]


async def test_wrong_topic_is_rejected_before_fetching_a_certificate():
    ses, fetcher, _ = make()
    with pytest.raises(WebhookAuthError, match="topic"):
        await deliver(ses, CLICK, topic=OTHER_TOPIC)
    assert fetcher.calls == []


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.us-east-1.amazonaws.com.evil.com/x.pem",
        "https://evil.com/sns.us-east-1.amazonaws.com/x.pem",
        "https://sns.us-east-1.amazonaws.com@evil.com/x.pem",
        "https://evil.com@sns.us-east-1.amazonaws.com/x.pem",
        "https://user:pw@sns.us-east-1.amazonaws.com/x.pem",
        "https://sns.us-east-1.amazonaws.com:8443/x.pem",
        "https://sns.us-east-1.amazonaws.com:443/x.pem",
        "https://sns.us-east-1.amazonaws.com\n.evil.com/x.pem",
        "https://sns.us-east-1.amazonaws.com\\@evil.com/x.pem",
        "https://SNS.us-east-1.amazonaws.com/x.pem",
        "https://sns.amazonaws.com/x.pem",
        "https://sns.us-east-1.amazonaws.com/x.txt",
        "https://sns.us_east-1.amazonaws.com/x.pem",
        # S3 bucket hosts: anyone can create bucket "sns" and put a certificate of theirs there.
        "https://sns.s3.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.s3.amazonaws.com.cn/SimpleNotificationService-1.pem",
        "https://sns.s3-us-west-2.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.s3-website-us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.s3.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.execute-api.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "//sns.us-east-1.amazonaws.com/x.pem",
        "",
    ],
)
async def test_signing_cert_url_off_aws_is_rejected_without_fetching(url):
    ses, fetcher, _ = make()
    with pytest.raises(WebhookAuthError):
        await deliver(ses, CLICK, cert_url=url)
    assert fetcher.calls == []


async def test_china_region_cert_url_is_allowed():
    ses, fetcher, _ = make(topics=["arn:aws-cn:sns:cn-north-1:123456789012:drip"])
    url = "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem"
    await deliver(ses, CLICK, topic="arn:aws-cn:sns:cn-north-1:123456789012:drip", cert_url=url)
    assert fetcher.calls == [url]


def test_is_sns_url():
    assert is_sns_url(SNS_CERT_URL)
    assert is_sns_url("https://sns.us-gov-west-1.amazonaws.com/x.pem")
    assert is_sns_url("https://sns.ap-southeast-2.amazonaws.com/x.pem")
    assert not is_sns_url("https://sns.s3.amazonaws.com/x.pem")
    assert is_sns_url("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=x")
    assert not is_sns_url("https://sns.eu-west-1.amazonaws.com.evil.com/")
    assert not is_sns_url(None)


async def test_forged_signature_is_rejected():
    ses, _, _ = make()
    envelope = sign_sns(sns_envelope(CLICK, topic_arn=TOPIC), OTHER_KEY, "2")
    with pytest.raises(WebhookAuthError, match="invalid signature"):
        await ses.handle({}, json.dumps(envelope).encode())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("Message", json.dumps({**CLICK, "eventType": "Complaint"})),
        ("MessageId", "replayed-id"),
        ("Timestamp", "2099-01-01T00:00:00.000Z"),
        ("Subject", "Something else"),
        ("Type", "SubscriptionConfirmation"),
    ],
)
async def test_tampered_field_is_rejected(field, value):
    ses, _, confirmer = make()
    envelope = {**sign_sns(sns_envelope(CLICK, topic_arn=TOPIC), SIGNING_KEY, "2"), field: value}
    with pytest.raises(WebhookAuthError):
        await ses.handle({}, json.dumps(envelope).encode())
    assert confirmer.calls == []


@pytest.mark.parametrize(
    "change",
    [
        {"SignatureVersion": "3"},
        {"Signature": "not base64!"},
        {"Signature": ""},
        {"Signature": None},
        {"Timestamp": "yesterday"},
        {"MessageId": 12},
    ],
)
async def test_malformed_signature_fields_are_rejected(change):
    ses, _, _ = make()
    envelope = {**sign_sns(sns_envelope(CLICK, topic_arn=TOPIC), SIGNING_KEY, "2"), **change}
    with pytest.raises(WebhookAuthError):
        await ses.handle({}, json.dumps(envelope).encode())


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"Type": "Other"}', b'{"Type": ["x"]}'])
async def test_body_that_is_not_an_sns_message_is_rejected(body):
    ses, _, _ = make()
    with pytest.raises(WebhookAuthError):
        await ses.handle({}, body)


async def test_sns_headers_must_match_the_body():
    ses, _, _ = make()
    envelope = sign_sns(sns_envelope(CLICK, topic_arn=TOPIC), SIGNING_KEY, "2")
    headers = {**sns_headers(envelope), "x-amz-sns-message-id": "another"}
    with pytest.raises(WebhookAuthError):
        await ses.handle(headers, json.dumps(envelope).encode())


@pytest.mark.parametrize(("age_hours", "accepted"), [(1.5, True), (3, False), (-0.5, False)])
async def test_freshness_window(age_hours, accepted):
    ses, _, _ = make()
    when = datetime.now(UTC) - timedelta(hours=age_hours)
    if accepted:
        _, events = await deliver(ses, CLICK, timestamp=when)
        assert len(events) == 1
    else:
        with pytest.raises(WebhookAuthError):
            await deliver(ses, CLICK, timestamp=when)


async def test_expired_certificate_is_rejected():
    later = datetime.now(UTC) + timedelta(days=60)
    ses = SesProvider([TOPIC], cert_fetcher=FakeFetcher(), clock=lambda: later)
    with pytest.raises(WebhookAuthError, match="certificate"):
        await deliver(ses, CLICK, timestamp=later)


@pytest.mark.parametrize("subject", ["evil.example", "sns.s3.amazonaws.com", "sns.amazonaws.co"])
async def test_a_certificate_not_issued_to_sns_is_rejected(subject):
    key, pem = make_sns_certificate(subject)
    ses = SesProvider([TOPIC], cert_fetcher=FakeFetcher(pem))
    envelope = sign_sns(sns_envelope(CLICK, topic_arn=TOPIC), key, "1")
    with pytest.raises(WebhookAuthError, match="issued to SNS"):
        await ses.handle({}, json.dumps(envelope).encode())


async def test_certificate_url_without_a_certificate_is_rejected():
    ses = SesProvider([TOPIC], cert_fetcher=FakeFetcher(b"<html>not a cert</html>"))
    with pytest.raises(WebhookAuthError):
        await deliver(ses, CLICK)


@pytest.mark.parametrize("message", ['{"hello": "world"}', "just some text", "[1]"])
async def test_notification_that_is_not_an_ses_event_is_a_payload_error(message):
    ses, _, _ = make()
    with pytest.raises(WebhookPayloadError):
        await deliver(ses, message)


def confirmation(topic=TOPIC, kind="SubscriptionConfirmation", **changes):
    message = (
        f"You have chosen to subscribe to the topic {topic}.\n"
        "To confirm the subscription, visit the SubscribeURL included in this message."
    )
    envelope = {**sns_envelope(message, topic_arn=topic, kind=kind), **changes}
    return sign_sns(envelope, SIGNING_KEY, "1")


@pytest.mark.parametrize("version", ["1", "2"])
async def test_subscription_confirmation_for_allowed_topic_is_confirmed_once(version):
    ses, fetcher, confirmer = make()
    envelope = sign_sns(confirmation(), SIGNING_KEY, version)
    events = await ses.handle(sns_headers(envelope), json.dumps(envelope).encode())
    assert events == []
    assert confirmer.calls == [envelope["SubscribeURL"]]
    assert fetcher.calls == [SNS_CERT_URL]


async def test_subscription_confirmation_for_other_topic_is_never_confirmed():
    ses, fetcher, confirmer = make()
    envelope = confirmation(topic=OTHER_TOPIC)
    with pytest.raises(WebhookAuthError):
        await ses.handle(sns_headers(envelope), json.dumps(envelope).encode())
    assert confirmer.calls == []
    assert fetcher.calls == []


async def test_subscription_confirmation_with_bad_signature_is_never_confirmed():
    ses, _, confirmer = make()
    envelope = {**confirmation(), "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?x=1"}
    with pytest.raises(WebhookAuthError):
        await ses.handle({}, json.dumps(envelope).encode())
    assert confirmer.calls == []


async def test_subscription_confirmation_to_a_non_sns_url_is_never_confirmed():
    ses, _, confirmer = make()
    unsigned = sns_envelope("confirm", topic_arn=TOPIC, kind="SubscriptionConfirmation")
    unsigned["SubscribeURL"] = "https://evil.example.com/?Action=ConfirmSubscription"
    envelope = sign_sns(unsigned, SIGNING_KEY, "2")
    with pytest.raises(WebhookAuthError):
        await ses.handle({}, json.dumps(envelope).encode())
    assert confirmer.calls == []


async def test_unsubscribe_confirmation_is_verified_and_ignored():
    ses, _, confirmer = make()
    envelope = confirmation(kind="UnsubscribeConfirmation")
    assert await ses.handle(sns_headers(envelope), json.dumps(envelope).encode()) == []
    assert confirmer.calls == []


@pytest.mark.parametrize("topics", [[], None])
async def test_unconfigured_provider_is_disabled(topics):
    settings = SimpleNamespace(ses_topic_arns=topics)
    ses = build_providers(settings, sns_cert_fetcher=FakeFetcher())["ses"]
    with pytest.raises(WebhookDisabled):
        await deliver(ses, CLICK)


async def test_cached_certificate_is_rechecked_for_expiry():
    now = [datetime.now(UTC)]
    fetcher = FakeFetcher()
    ses = SesProvider([TOPIC], cert_fetcher=fetcher, clock=lambda: now[0])
    await deliver(ses, CLICK)
    now[0] += timedelta(days=60)
    with pytest.raises(WebhookAuthError, match="certificate"):
        await deliver(ses, CLICK, timestamp=now[0])
    assert fetcher.calls == [SNS_CERT_URL]
