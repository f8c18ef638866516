"""Amazon SES events through an SNS HTTPS subscription, over real HTTP: SNS signatures (v1 and
v2) checked with a self-made certificate, topics allowlisted, subscriptions confirmed."""

from __future__ import annotations

import json
import secrets
from collections import Counter
from datetime import timedelta
from typing import Any

from tests.api.webhooks.webhooks_support import (
    OTHER_TOPIC,
    SES_TOPIC,
    SNS_KEY,
    Hooks,
    Sent,
    addresses,
    assert_journey_reactions,
    at,
    long_campaign,
    now_iso,
)
from tests.webhooks.signing import (
    SNS_CERT_URL,
    make_sns_certificate,
    sign_sns,
    sns_envelope,
    sns_headers,
)

UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15"


def ses(event_type: str, sent: Sent, **detail: Any) -> dict[str, Any]:
    """The SES event that SNS carries (as a JSON string) in `Message`. Tags set with
    X-SES-MESSAGE-TAGS come back as lists under mail.tags."""
    return {
        "eventType": event_type,
        "mail": {
            "timestamp": now_iso(),
            "source": "hello@drip.example.com",
            "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/drip.example.com",
            "sendingAccountId": "123456789012",
            "messageId": f"0102019365a1b2c3-{secrets.token_hex(4)}-8192-4a3b-9c4d-000000",
            "destination": [sent.email],
            "headersTruncated": False,
            "headers": [
                {"name": "From", "value": "Example <hello@drip.example.com>"},
                {"name": "To", "value": sent.email},
                {"name": "Message-ID", "value": f"<{sent.message_id}>"},
            ],
            "tags": {
                "ses:operation": ["SendRawEmail"],
                "ses:configuration-set": ["drip-prod"],
                "ses:from-domain": ["drip.example.com"],
                "drip_delivery_id": [sent.delivery_id],
                "campaign_id": [str(sent.campaign_id)],
            },
            "commonHeaders": {
                "from": ["Example <hello@drip.example.com>"],
                "to": [sent.email],
                "messageId": f"<{sent.message_id}>",
                "subject": "Welcome",
            },
        },
        **detail,
    }


def opened(sent: Sent) -> dict[str, Any]:
    return ses(
        "Open", sent, open={"ipAddress": "203.0.113.77", "timestamp": now_iso(), "userAgent": UA}
    )


def bounced(sent: Sent, kind: str = "Permanent") -> dict[str, Any]:
    status = {"Permanent": "5.1.1", "Transient": "4.2.2", "Undetermined": "5.0.0"}[kind]
    return ses(
        "Bounce",
        sent,
        bounce={
            "bounceType": kind,
            "bounceSubType": {"Transient": "MailboxFull"}.get(kind, "General"),
            "bouncedRecipients": [
                {
                    "emailAddress": sent.email,
                    "action": "failed",
                    "status": status,
                    "diagnosticCode": f"smtp; 550 {status} user unknown",
                }
            ],
            "timestamp": now_iso(),
            "feedbackId": f"0102019365a1b2c3-{secrets.token_hex(8)}-000000",
            "reportingMTA": "dns; a8-70.smtp-out.amazonses.com",
        },
    )


def complaint(sent: Sent, feedback_type: str = "abuse") -> dict[str, Any]:
    return ses(
        "Complaint",
        sent,
        complaint={
            "complainedRecipients": [{"emailAddress": sent.email}],
            "timestamp": now_iso(),
            "feedbackId": f"0102019365a1b2c3-{secrets.token_hex(8)}-000000",
            "userAgent": "Yahoo!-Mail-Feedback/2.0",
            "complaintFeedbackType": feedback_type,
            "arrivalDate": now_iso(),
        },
    )


def every_event(sent: Sent) -> list[tuple[dict[str, Any], str | None]]:
    unsubscribed = {
        "contactList": "drip",
        "timestamp": now_iso(),
        "source": "UnsubscribeHeader",
        "newTopicPreferences": {
            "unsubscribeAll": True,
            "topicSubscriptionStatus": [{"topicName": "news", "subscriptionStatus": "OptOut"}],
        },
        "oldTopicPreferences": {
            "unsubscribeAll": False,
            "topicSubscriptionStatus": [{"topicName": "news", "subscriptionStatus": "OptIn"}],
        },
    }
    delivery = {
        "timestamp": now_iso(),
        "processingTimeMillis": 546,
        "recipients": [sent.email],
        "smtpResponse": "250 2.6.0 Message received",
        "reportingMTA": "a8-70.smtp-out.amazonses.com",
    }
    click = {
        "ipAddress": "203.0.113.77",
        "link": "https://app.example.com/onboarding/step-2",
        "linkTags": {"cta": ["primary"]},
        "timestamp": now_iso(),
        "userAgent": UA,
    }
    delay = {
        "timestamp": now_iso(),
        "delayType": "TransientCommunicationFailure",
        "expirationTime": now_iso(),
        "delayedRecipients": [
            {
                "emailAddress": sent.email,
                "status": "4.4.1",
                "diagnosticCode": "smtp; 421 4.4.1 Unable to connect to remote host",
            }
        ],
    }
    return [
        (ses("Send", sent, send={}), None),
        (ses("Delivery", sent, delivery=delivery), "delivered"),
        (opened(sent), "open"),
        (ses("Click", sent, click=click), "click"),
        (ses("DeliveryDelay", sent, deliveryDelay=delay), "bounce_soft"),
        (bounced(sent, "Transient"), "bounce_soft"),
        (bounced(sent, "Undetermined"), "bounce_soft"),
        (bounced(sent, "Permanent"), "bounce_hard"),
        (complaint(sent, "not-spam"), None),  # the opposite of a complaint
        (complaint(sent), "complaint"),
        (ses("Subscription", sent, subscription=unsubscribed), "unsubscribe"),
        (ses("Reject", sent, reject={"reason": "Bad content"}), None),
        (
            ses(
                "Rendering Failure",
                sent,
                failure={"errorMessage": "Attribute 'name' is not present", "templateName": "t"},
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
    for i, (message, _) in enumerate(expected):
        # SNS SignatureVersion 1 (SHA1) and 2 (SHA256) are both in use.
        response = await system.ses(message, version="1" if i % 2 else "2")
        assert response.status_code == 200, (message["eventType"], response.text)
        assert response.json() == {"received": 1, "stored": 1, "duplicates": 0}

    stored = await system.wait_signalled(delivery_id=sent.delivery_id)
    assert Counter((e["raw_type"], e["type"]) for e in stored) == Counter(
        (message["eventType"], kind) for message, kind in expected
    )
    assert all(e["campaign_id"] == campaign and e["email"] == email for e in stored)
    [click] = [e for e in stored if e["type"] == "click"]
    assert click["url"] == "https://app.example.com/onboarding/step-2"
    assert system.sns.cert_fetches == [SNS_CERT_URL], "the certificate is fetched once, cached"
    ended = await system.wait_journey(
        campaign, email, lambda j: j["finished_at"] is not None, "the journey to end"
    )
    assert ended["status"] in ("bounced", "complained", "unsubscribed")


async def test_journey_reacts_to_ses_open_and_permanent_bounce(system: Hooks) -> None:
    async def post_open(sent: Sent):  # type: ignore[no-untyped-def]
        return await system.ses(opened(sent))

    async def post_bounce(sent: Sent):  # type: ignore[no-untyped-def]
        return await system.ses(bounced(sent, "Permanent"))

    await assert_journey_reactions(system, post_open, post_bounce)


async def test_subscription_is_confirmed_only_for_an_allowed_topic(hooks: Hooks) -> None:
    invite = "You have chosen to subscribe to the topic. To confirm, visit the SubscribeURL."
    wrong = await hooks.ses(invite, kind="SubscriptionConfirmation", topic=OTHER_TOPIC)
    assert wrong.status_code == 401, wrong.text
    assert hooks.sns.confirmed == []

    confirmation = sns_envelope(invite, topic_arn=SES_TOPIC, kind="SubscriptionConfirmation")
    signed = sign_sns(confirmation, SNS_KEY)
    response = await hooks.post("ses", json.dumps(signed).encode(), sns_headers(signed))
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 0, "stored": 0, "duplicates": 0}
    assert hooks.sns.confirmed == [confirmation["SubscribeURL"]]

    # Then SES's one-off notice on the new topic, and later an unsubscribe confirmation.
    notice = "Successfully validated SNS topic for Amazon SES event publishing."
    assert (await hooks.ses(notice)).json() == {"received": 0, "stored": 0, "duplicates": 0}
    bye = await hooks.ses("You have chosen to deactivate", kind="UnsubscribeConfirmation")
    assert bye.status_code == 200
    assert await hooks.events() == []


async def test_forged_stale_or_foreign_messages_are_401_and_store_nothing(hooks: Hooks) -> None:
    victim = Sent(1, addresses("victim")[0], "snd_01JD8Q4W7M2K9X3V5B6N8P0R1T", "m@x")
    message = complaint(victim)
    other_key, _ = make_sns_certificate()
    rejected = [
        await hooks.ses(message, key=other_key),  # not signed by the certificate's key
        await hooks.ses(message, topic=OTHER_TOPIC),  # genuine SNS, someone else's topic
        await hooks.ses(message, timestamp=at(-timedelta(hours=3))),  # beyond SNS's retries
        await hooks.ses(message, cert_url="https://sns.eu-west-1.amazonaws.com.evil.example/c.pem"),
        await hooks.ses(message, cert_url="http://sns.eu-west-1.amazonaws.com/c.pem"),
    ]
    envelope = sign_sns(sns_envelope(message, topic_arn=SES_TOPIC), SNS_KEY)
    envelope["Message"] = envelope["Message"].replace("abuse", "fraud")  # changed in transit
    rejected.append(await hooks.post("ses", json.dumps(envelope).encode(), sns_headers(envelope)))
    envelope = sign_sns(sns_envelope(message, topic_arn=SES_TOPIC), SNS_KEY)
    mismatched = {**sns_headers(envelope), "x-amz-sns-message-id": "another-message"}
    rejected.append(await hooks.post("ses", json.dumps(envelope).encode(), mismatched))
    for response in rejected:
        assert response.status_code == 401, response.text
        assert isinstance(response.json()["detail"], str)
    assert await hooks.events() == []
    assert set(hooks.sns.cert_fetches) <= {SNS_CERT_URL}, "only SNS URLs are ever fetched"

    # SNS retries keep the MessageId and Timestamp: the retry is recognised.
    moment = at()
    first = await hooks.ses(message, message_id="8d2f0c5e-6a1b", timestamp=moment)
    retry = await hooks.ses(message, message_id="8d2f0c5e-6a1b", timestamp=moment)
    assert first.json() == {"received": 1, "stored": 1, "duplicates": 0}
    assert retry.json() == {"received": 1, "stored": 0, "duplicates": 1}


async def test_an_unreachable_signing_certificate_is_a_503_so_sns_retries(hooks: Hooks) -> None:
    victim = Sent(1, addresses("victim")[0], "snd_01JD8Q4W7M2K9X3V5B6N8P0R1T", "m@x")
    elsewhere = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem"
    response = await hooks.ses(opened(victim), cert_url=elsewhere)
    assert response.status_code == 503, response.text
    assert response.json()["detail"] == "could not verify the request now; retry later"
    assert hooks.sns.cert_fetches == [elsewhere] and await hooks.events() == []
