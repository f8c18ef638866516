import inspect
import json
import time
from types import SimpleNamespace

import pytest

import webhooks
from tests.webhooks.signing import (
    basic_auth,
    mailgun_body,
    resend_secret,
    sendgrid_keypair,
    sign_resend,
    sign_sendgrid,
)
from webhooks import build_providers
from webhooks.errors import (
    WebhookAuthError,
    WebhookDisabled,
    WebhookError,
    WebhookPayloadError,
)

UNCONFIGURED = SimpleNamespace(
    sendgrid_webhook_public_key=None,
    postmark_webhook_user=None,
    postmark_webhook_password=None,
    mailgun_webhook_signing_key=None,
    ses_topic_arns=[],
    resend_webhook_secret=None,
)


def test_error_status_codes():
    assert issubclass(WebhookDisabled, WebhookError)
    assert issubclass(WebhookAuthError, WebhookError)
    assert issubclass(WebhookPayloadError, WebhookError)
    assert WebhookDisabled.status_code == 404
    assert WebhookAuthError.status_code == 401
    assert WebhookPayloadError.status_code == 400
    assert webhooks.WebhookAuthError is WebhookAuthError


def test_every_provider_is_built_under_its_name():
    providers = build_providers(UNCONFIGURED)
    assert set(providers) == {"sendgrid", "postmark", "mailgun", "ses", "resend"}
    for name, provider in providers.items():
        assert provider.name == name
        assert inspect.iscoroutinefunction(provider.handle)


@pytest.mark.parametrize("name", ["sendgrid", "postmark", "mailgun", "ses", "resend"])
async def test_unconfigured_providers_are_disabled_before_looking_at_the_request(name):
    provider = build_providers(UNCONFIGURED)[name]
    with pytest.raises(WebhookDisabled):
        await provider.handle({}, b"")


async def test_settings_object_without_webhook_attributes_means_all_disabled():
    providers = build_providers(SimpleNamespace())
    for provider in providers.values():
        with pytest.raises(WebhookDisabled):
            await provider.handle({}, b"{}")


async def test_fully_configured_settings():
    keys = sendgrid_keypair()
    secret = resend_secret()
    settings = SimpleNamespace(
        sendgrid_webhook_public_key=keys.public_b64,
        postmark_webhook_user="u",
        postmark_webhook_password="p",
        mailgun_webhook_signing_key="mg-key",
        ses_topic_arns=["arn:aws:sns:eu-west-1:123456789012:drip-ses-events"],
        resend_webhook_secret=secret,
    )
    providers = build_providers(settings)
    now = int(time.time())

    body = json.dumps([{"event": "processed", "sg_event_id": "x", "timestamp": now}]).encode()
    assert (
        len(await providers["sendgrid"].handle(sign_sendgrid(keys.private_key, now, body), body))
        == 1
    )

    body = json.dumps(
        {"RecordType": "Open", "MessageID": "m", "ReceivedAt": "2024-11-26T11:00:00Z"}
    )
    assert len(await providers["postmark"].handle(basic_auth("u", "p"), body.encode())) == 1

    body = mailgun_body("mg-key", {"event": "opened", "timestamp": now})
    assert len(await providers["mailgun"].handle({}, body)) == 1

    body = json.dumps({"type": "email.opened", "created_at": "2024-11-26T11:00:00Z", "data": {}})
    headers = sign_resend(secret, "msg_1", now, body.encode())
    assert len(await providers["resend"].handle(headers, body.encode())) == 1


async def test_secrets_never_appear_in_error_messages():
    secret = resend_secret()
    settings = SimpleNamespace(
        postmark_webhook_user="hook-user",
        postmark_webhook_password="hook-password-123",
        mailgun_webhook_signing_key="mailgun-signing-key-123",
        resend_webhook_secret=secret,
    )
    providers = build_providers(settings)
    attempts = [
        ("postmark", basic_auth("hook-user", "nope"), b"{}"),
        ("mailgun", {}, mailgun_body("wrong", {"event": "opened"})),
        ("resend", sign_resend(resend_secret(), "msg_1", int(time.time()), b"{}"), b"{}"),
    ]
    for name, headers, body in attempts:
        with pytest.raises(WebhookAuthError) as caught:
            await providers[name].handle(headers, body)
        message = str(caught.value)
        for secret_value in ("hook-password-123", "mailgun-signing-key-123", secret):
            assert secret_value not in message
