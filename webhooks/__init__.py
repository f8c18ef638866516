"""Verify email-provider webhook requests and normalise their events to `IncomingEvent`.

No HTTP server or database work here: the `POST /api/webhooks/{provider}` route passes the raw
headers and body to `providers[provider].handle(...)`, stores what comes back under
UNIQUE(provider, dedupe_key), and answers a `WebhookError` with its `status_code`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from domain.events import IncomingEvent
from webhooks.errors import (
    WebhookAuthError,
    WebhookDisabled,
    WebhookError,
    WebhookPayloadError,
)
from webhooks.mailgun import MailgunProvider
from webhooks.postmark import PostmarkProvider
from webhooks.resend import ResendProvider
from webhooks.sendgrid import SendGridProvider
from webhooks.ses import CertFetcher, Confirmer, SesProvider

__all__ = [
    "WebhookAuthError",
    "WebhookDisabled",
    "WebhookError",
    "WebhookPayloadError",
    "WebhookProvider",
    "build_providers",
]


class WebhookProvider(Protocol):
    name: str

    async def handle(self, headers: Mapping[str, str], body: bytes) -> list[IncomingEvent]:
        """Authenticate the request, then return its events (possibly none).

        Raises WebhookDisabled, WebhookAuthError or WebhookPayloadError; anything else (e.g. the
        SNS certificate could not be fetched) is a server-side failure worth a provider retry.
        """
        ...


def build_providers(
    settings: Any,
    *,
    sns_cert_fetcher: CertFetcher | None = None,
    sns_confirmer: Confirmer | None = None,
) -> dict[str, WebhookProvider]:
    """Every provider, keyed by its URL name. An unconfigured one answers WebhookDisabled.

    Raises ValueError at once for a configured but unusable secret (bad SendGrid key or Resend
    secret), so a misconfiguration shows at startup rather than as 401s.
    """

    def setting(name: str) -> Any:
        return getattr(settings, name, None) or None

    user, password = setting("postmark_webhook_user"), setting("postmark_webhook_password")
    providers: list[WebhookProvider] = [
        SendGridProvider(setting("sendgrid_webhook_public_key")),
        PostmarkProvider([(user, password)] if user and password else []),
        MailgunProvider(setting("mailgun_webhook_signing_key")),
        SesProvider(
            list(setting("ses_topic_arns") or []),
            cert_fetcher=sns_cert_fetcher,
            confirmer=sns_confirmer,
        ),
        ResendProvider(setting("resend_webhook_secret")),
    ]
    return {provider.name: provider for provider in providers}
