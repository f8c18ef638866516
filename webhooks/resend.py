"""Resend webhooks, delivered and signed by Svix (reference §6)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.events import IncomingEvent
from domain.journey import EventType
from mail.message import DELIVERY_HEADERS
from webhooks._common import (
    bounce_info,
    check_fresh,
    dig,
    email,
    from_iso,
    header,
    message_id,
    parse_json,
    text,
)
from webhooks.errors import WebhookAuthError, WebhookDisabled, WebhookPayloadError

SECRET_PREFIX = "whsec_"

_SIMPLE = {
    "email.delivered": EventType.DELIVERED,
    "email.opened": EventType.OPEN,
    "email.clicked": EventType.CLICK,
    "email.delivery_delayed": EventType.BOUNCE_SOFT,  # Resend keeps trying: never terminal
    "email.complained": EventType.COMPLAINT,
    "email.suppressed": EventType.BOUNCE_HARD,  # on the suppression list: never sent
}


def decode_secret(secret: str) -> bytes:
    """`whsec_<base64>` -> the HMAC key (the Svix libraries also accept the bare base64)."""
    encoded = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("resend_webhook_secret is not a whsec_<base64> secret") from exc


class ResendProvider:
    name = "resend"

    def __init__(
        self,
        secret: str | None,
        *,
        tolerance: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        # Svix signs every retry afresh, so the short tolerance of its own libraries is safe.
        self._key = decode_secret(secret) if secret else None
        self._tolerance = tolerance
        self._clock = clock

    async def handle(self, headers: Mapping[str, str], body: bytes) -> list[IncomingEvent]:
        if self._key is None:
            raise WebhookDisabled("resend webhook is not configured")
        msg_id = self._verify(headers, body)
        payload = parse_json(body)
        if (
            not isinstance(payload, dict)
            or not isinstance(payload.get("type"), str)
            or not isinstance(payload.get("data"), dict)
        ):
            raise WebhookPayloadError("resend body must be an object with 'type' and 'data'")
        return [self._event(payload, msg_id)]

    def _verify(self, headers: Mapping[str, str], body: bytes) -> str:
        """Check the Svix signature and timestamp; return the svix-id."""
        assert self._key is not None
        msg_id = header(headers, "svix-id")
        timestamp = header(headers, "svix-timestamp")
        signatures = header(headers, "svix-signature")
        if not msg_id or not timestamp or not signatures:
            raise WebhookAuthError("missing svix headers")
        try:
            signed_at = datetime.fromtimestamp(int(timestamp), tz=UTC)
        except (ValueError, OverflowError, OSError) as exc:
            raise WebhookAuthError("invalid signature") from exc
        check_fresh(signed_at, self._clock(), max_age=self._tolerance, max_future=self._tolerance)
        content = f"{msg_id}.{timestamp}.".encode() + body
        expected = base64.b64encode(hmac.new(self._key, content, hashlib.sha256).digest())
        # Several space-separated "v1,<sig>" entries appear while a secret is being rotated.
        ok = False
        for entry in signatures.split():
            version, _, signature = entry.partition(",")
            if version == "v1":
                ok |= hmac.compare_digest(expected, signature.encode())
        if not ok:
            raise WebhookAuthError("invalid signature")
        return msg_id

    def _event(self, payload: dict[str, Any], msg_id: str) -> IncomingEvent:
        raw_type: str = payload["type"]
        data: dict[str, Any] = payload["data"]
        kind: str | None = _SIMPLE.get(raw_type)  # sent, scheduled, failed, unknown: stored only
        bounce = None
        if raw_type == "email.bounced":
            # Resend reports Permanent or Undetermined here (transient trouble arrives as
            # delivery_delayed); only an explicit Transient is treated as recoverable.
            hard = dig(data, "bounce", "type") != "Transient"
            kind = EventType.BOUNCE_HARD if hard else EventType.BOUNCE_SOFT
            diagnostic = dig(data, "bounce", "diagnosticCode", 0) or dig(data, "bounce", "message")
            bounce = bounce_info("hard" if hard else "soft", None, diagnostic)
        elif kind == EventType.BOUNCE_HARD:
            bounce = bounce_info("hard", None, dig(data, "suppressed", "message"))
        elif kind == EventType.BOUNCE_SOFT:
            bounce = bounce_info("soft")
        elif raw_type == "contact.updated" and data.get("unsubscribed") is True:
            kind = EventType.UNSUBSCRIBE
        to = data.get("to")
        recipient = data.get("email") if raw_type.startswith("contact.") else None
        if isinstance(to, list) and len(to) == 1:
            recipient = to[0]  # events name no recipient; we send one per message
        elif isinstance(to, str):
            recipient = to
        headers = data.get("headers")
        return IncomingEvent(
            provider=self.name,
            dedupe_key=msg_id,  # the same for every retry of this event
            type=kind,
            raw_type=raw_type,
            delivery_id=text(_named(data.get("tags"), "drip_delivery_id"))
            or next(filter(None, (text(_named(headers, h)) for h in DELIVERY_HEADERS)), None),
            message_id=message_id(_named(headers, "Message-ID")),
            recipient=email(recipient),
            occurred_at=from_iso(payload.get("created_at")),
            url=text(dig(data, "click", "link")) if kind == EventType.CLICK else None,
            bounce=bounce,
            raw=payload,
        )


def _named(items: Any, name: str) -> Any:
    """A value from a list of {name, value} pairs or from a plain object (both are seen)."""
    wanted = name.lower()
    if isinstance(items, dict):
        return next((v for k, v in items.items() if k.lower() == wanted), None)
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and str(item.get("name", "")).lower() == wanted:
                return item.get("value")
    return None
