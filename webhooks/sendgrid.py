"""SendGrid Event Webhook: ECDSA P-256 signed batches of events (reference §2)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from domain.events import IncomingEvent
from domain.journey import EventType
from webhooks._common import (
    bounce_info,
    check_fresh,
    content_hash,
    email,
    from_unix,
    header,
    message_id,
    parse_json,
    text,
)
from webhooks.errors import WebhookAuthError, WebhookDisabled, WebhookPayloadError

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

_SIMPLE = {
    "delivered": EventType.DELIVERED,
    "open": EventType.OPEN,
    "click": EventType.CLICK,
    "deferred": EventType.BOUNCE_SOFT,
    "spamreport": EventType.COMPLAINT,
    "unsubscribe": EventType.UNSUBSCRIBE,
    "group_unsubscribe": EventType.UNSUBSCRIBE,
}
# `dropped`: nothing was sent; the reason says whether it is a suppression we must honour.
_DROPPED = {
    "bounced address": EventType.BOUNCE_HARD,
    "invalid": EventType.BOUNCE_HARD,
    "unsubscribed address": EventType.UNSUBSCRIBE,
    "spam reporting address": EventType.COMPLAINT,
}


def load_public_key(value: str) -> ec.EllipticCurvePublicKey:
    """SendGrid shows the key as base64 DER (a PEM body without armour); accept a PEM too."""
    value = value.strip()
    try:
        if value.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(value.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(value, validate=True))
    except (ValueError, binascii.Error) as exc:
        raise ValueError("sendgrid_webhook_public_key is not a valid public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("sendgrid_webhook_public_key is not an EC P-256 key")
    return key


class SendGridProvider:
    name = "sendgrid"

    def __init__(
        self,
        public_key: str | None,
        *,
        max_age: timedelta | None = timedelta(hours=72),
        max_future: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        # Whether retries reuse the timestamp is undocumented (reference §11), and SendGrid retries
        # for 24 h, so the freshness window is deliberately loose; dedupe does the real work.
        self._key = load_public_key(public_key) if public_key else None
        self._max_age = max_age
        self._max_future = max_future
        self._clock = clock

    async def handle(self, headers: Mapping[str, str], body: bytes) -> list[IncomingEvent]:
        if self._key is None:
            raise WebhookDisabled("sendgrid webhook is not configured")
        self._verify(headers, body)
        batch = parse_json(body)
        if not isinstance(batch, list):
            raise WebhookPayloadError("sendgrid body must be a JSON array of events")
        return [self._event(item) for item in batch]

    def _verify(self, headers: Mapping[str, str], body: bytes) -> None:
        assert self._key is not None
        signature = header(headers, SIGNATURE_HEADER)
        timestamp = header(headers, TIMESTAMP_HEADER)
        if not signature or not timestamp:
            raise WebhookAuthError("missing signature headers")
        try:
            # Raw bytes, before any JSON parsing: the signature covers them exactly.
            self._key.verify(
                base64.b64decode(signature, validate=True),
                timestamp.encode() + body,
                ec.ECDSA(hashes.SHA256()),
            )
            signed_at = datetime.fromtimestamp(int(timestamp), tz=UTC)
        except (InvalidSignature, ValueError, binascii.Error, OverflowError, OSError) as exc:
            raise WebhookAuthError("invalid signature") from exc
        if self._max_age is not None:
            check_fresh(
                signed_at, self._clock(), max_age=self._max_age, max_future=self._max_future
            )

    def _event(self, item: Any) -> IncomingEvent:
        if not isinstance(item, dict) or not isinstance(item.get("event"), str):
            raise WebhookPayloadError("sendgrid event must be an object with an 'event' string")
        raw_type: str = item["event"]
        kind = self._type(raw_type, item)
        bounce = None
        if kind == EventType.BOUNCE_HARD:
            bounce = bounce_info("hard", item.get("status"), item.get("reason"))
        elif kind == EventType.BOUNCE_SOFT:
            bounce = bounce_info(
                "soft", item.get("status"), item.get("reason") or item.get("response")
            )
        machine = raw_type == "open" and item.get("sg_machine_open") is True
        return IncomingEvent(
            provider=self.name,
            # A missing sg_event_id is unexpected; hashing the event still dedupes exact retries.
            dedupe_key=text(item.get("sg_event_id")) or content_hash(item),
            type=kind,
            raw_type=raw_type,
            delivery_id=text(item.get("drip_delivery_id")),  # custom_args arrive flattened
            message_id=message_id(item.get("smtp-id")),
            recipient=email(item.get("email")),
            occurred_at=from_unix(item.get("timestamp")),
            url=text(item.get("url")) if kind == EventType.CLICK else None,
            machine=machine,
            machine_reason="sendgrid_machine_open" if machine else None,
            bounce=bounce,
            raw=item,
        )

    @staticmethod
    def _type(raw_type: str, item: dict[str, Any]) -> str | None:
        if raw_type == "bounce":
            # "blocked" is a temporary refusal by the receiver; "bounce" is a permanent failure.
            return EventType.BOUNCE_SOFT if item.get("type") == "blocked" else EventType.BOUNCE_HARD
        if raw_type == "dropped":
            return _DROPPED.get(str(item.get("reason") or "").strip().lower())
        return _SIMPLE.get(raw_type)  # processed, group_resubscribe, unknown: stored only
