"""Mailgun webhooks: HMAC over timestamp+token, carried inside the JSON body (reference §4)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.events import IncomingEvent
from domain.journey import EventType
from webhooks._common import (
    bounce_info,
    check_fresh,
    dig,
    email,
    from_unix,
    message_id,
    text,
)
from webhooks.errors import WebhookAuthError, WebhookDisabled, WebhookPayloadError

_SIMPLE = {
    "delivered": EventType.DELIVERED,
    "opened": EventType.OPEN,
    "clicked": EventType.CLICK,
    "complained": EventType.COMPLAINT,
    "unsubscribed": EventType.UNSUBSCRIBE,
}


class MailgunProvider:
    name = "mailgun"

    def __init__(
        self,
        signing_key: str | None,
        *,
        max_age: timedelta = timedelta(hours=24),
        max_future: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        # Retries run for about 8 h and processing can lag, so the window is hours, not seconds.
        self._key = signing_key.encode() if signing_key else None
        self._max_age = max_age
        self._max_future = max_future
        self._clock = clock

    async def handle(self, headers: Mapping[str, str], body: bytes) -> list[IncomingEvent]:
        if self._key is None:
            raise WebhookDisabled("mailgun webhook is not configured")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            payload = None  # no readable signature block: the same answer as a wrong signature
        token, signed_at = self._verify(dig(payload, "signature"))
        data = dig(payload, "event-data")
        if not isinstance(data, dict) or not isinstance(data.get("event"), str):
            raise WebhookPayloadError("mailgun body has no 'event-data' object with an 'event'")
        # The signature does not cover the event; what binds them: a signature is never older
        # than its event, and its token is single-use (IncomingEvent.nonce, refused when it
        # comes back with another event, whatever its type).
        occurred = from_unix(data.get("timestamp"))
        if occurred is not None and occurred > signed_at + self._max_future:
            raise WebhookAuthError("the signature predates the event it came with")
        return [self._event(data, token)]

    def _verify(self, block: Any) -> tuple[str, datetime]:
        """Check the signature block; return its token and signing time."""
        assert self._key is not None
        timestamp, token, signature = (dig(block, f) for f in ("timestamp", "token", "signature"))
        if isinstance(timestamp, int) and not isinstance(timestamp, bool):
            timestamp = str(timestamp)
        if not (isinstance(timestamp, str) and isinstance(token, str) and token):
            raise WebhookAuthError("invalid signature")
        if not isinstance(signature, str):
            raise WebhookAuthError("invalid signature")
        expected = hmac.new(self._key, (timestamp + token).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
            raise WebhookAuthError("invalid signature")
        # The signature covers only timestamp+token, never event-data: freshness plus the
        # single-use token is what stops a captured signature block being replayed.
        try:
            signed_at = datetime.fromtimestamp(int(timestamp), tz=UTC)
        except (ValueError, OverflowError, OSError) as exc:
            raise WebhookAuthError("invalid signature") from exc
        check_fresh(signed_at, self._clock(), max_age=self._max_age, max_future=self._max_future)
        return token, signed_at

    def _event(self, data: dict[str, Any], token: str) -> IncomingEvent:
        raw_type: str = data["event"]
        kind: str | None = _SIMPLE.get(raw_type)  # accepted, rejected, unknown: stored only
        bounce = None
        if raw_type == "failed":
            # permanent = Mailgun gave up; temporary = it keeps retrying, so never terminal.
            hard = data.get("severity") == "permanent"
            kind = EventType.BOUNCE_HARD if hard else EventType.BOUNCE_SOFT
            status = dig(data, "delivery-status")
            bounce = bounce_info(
                "hard" if hard else "soft",
                dig(status, "enhanced-code") or dig(status, "code"),
                dig(status, "message") or dig(status, "description") or data.get("reason"),
            )
        return IncomingEvent(
            provider=self.name,
            dedupe_key=token,
            type=kind,
            raw_type=raw_type,
            delivery_id=text(dig(data, "user-variables", "drip_delivery_id")),
            message_id=message_id(dig(data, "message", "headers", "message-id")),
            recipient=email(data.get("recipient")),
            occurred_at=from_unix(data.get("timestamp")),
            url=text(data.get("url")) if kind == EventType.CLICK else None,
            bounce=bounce,
            raw=data,
            nonce=token,
        )
