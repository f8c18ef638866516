"""Errors a webhook provider raises; the HTTP route turns each into its `status_code`."""

from __future__ import annotations


class WebhookError(Exception):
    """Base class. Messages are safe to return to the caller: they never contain secrets."""

    status_code: int = 400


class WebhookDisabled(WebhookError):
    """The provider's secret is not configured, so the endpoint does not exist for it."""

    status_code = 404


class WebhookAuthError(WebhookError):
    """Bad, missing or stale signature or credentials, or an SNS topic we did not configure."""

    status_code = 401


class WebhookPayloadError(WebhookError):
    """Authentication passed but the body is not the provider's event shape."""

    status_code = 400
