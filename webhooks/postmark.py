"""Postmark webhooks: unsigned, authenticated by HTTP Basic credentials (reference §3)."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

from domain.events import IncomingEvent
from domain.journey import EventType
from webhooks._common import (
    bounce_info,
    content_hash,
    email,
    from_iso,
    header,
    parse_json,
    text,
)
from webhooks.errors import WebhookAuthError, WebhookDisabled, WebhookPayloadError

_HARD_BOUNCES = {"HardBounce", "BadEmailAddress"}
# Spam/virus notifications are filter verdicts on one message, not a dead address.
_SOFT_BOUNCES = {"SoftBounce", "Transient", "DnsError", "SpamNotification", "VirusNotification"}
_SUPPRESSIONS = {
    "ManualSuppression": EventType.UNSUBSCRIBE,
    "HardBounce": EventType.BOUNCE_HARD,
    "SpamComplaint": EventType.COMPLAINT,
}
# RecordType -> (field holding the event time, field holding the recipient)
_FIELDS = {
    "Delivery": ("DeliveredAt", "Recipient"),
    "Open": ("ReceivedAt", "Recipient"),
    "Click": ("ReceivedAt", "Recipient"),
    "Bounce": ("BouncedAt", "Email"),
    "SpamComplaint": ("BouncedAt", "Email"),
    "SubscriptionChange": ("ChangedAt", "Recipient"),
}


class PostmarkProvider:
    name = "postmark"

    def __init__(self, credentials: Sequence[tuple[str, str]]) -> None:
        # Several (user, password) pairs may be accepted at once, so credentials can rotate.
        self._credentials = [(u.encode(), p.encode()) for u, p in credentials if u and p]

    async def handle(self, headers: Mapping[str, str], body: bytes) -> list[IncomingEvent]:
        if not self._credentials:
            raise WebhookDisabled("postmark webhook is not configured")
        self._authenticate(header(headers, "Authorization"))
        record = parse_json(body)
        if not isinstance(record, dict):
            raise WebhookPayloadError("postmark body must be a JSON object")
        return [self._event(record)]

    def _authenticate(self, authorization: str | None) -> None:
        scheme, _, encoded = (authorization or "").partition(" ")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        user, sep, password = decoded.partition(b":")
        if scheme.lower() != "basic" or not sep:
            raise WebhookAuthError("missing or malformed Basic credentials")
        ok = False
        for want_user, want_password in self._credentials:
            # Constant time, and both halves always compared, so timing reveals nothing.
            ok |= hmac.compare_digest(user, want_user) & hmac.compare_digest(
                password, want_password
            )
        if not ok:
            raise WebhookAuthError("invalid credentials")

    def _event(self, record: dict[str, Any]) -> IncomingEvent:
        record_type = record.get("RecordType")
        if record_type is None and "FromFull" in record:
            raise WebhookPayloadError("inbound-message payload sent to the event webhook")
        if record_type not in _FIELDS:
            raise WebhookPayloadError(f"unexpected Postmark RecordType {record_type!r}")
        time_field, recipient_field = _FIELDS[record_type]
        kind = self._type(record_type, record)
        bounce = None
        if kind in (EventType.BOUNCE_HARD, EventType.BOUNCE_SOFT) and record_type == "Bounce":
            hard = kind == EventType.BOUNCE_HARD
            bounce = bounce_info(
                "hard" if hard else "soft", None, record.get("Details") or record.get("Description")
            )
        metadata = record.get("Metadata")
        return IncomingEvent(
            provider=self.name,
            dedupe_key=self._dedupe_key(record_type, record, time_field, recipient_field),
            type=kind,
            raw_type=record_type,
            delivery_id=text(metadata.get("drip_delivery_id"))
            if isinstance(metadata, dict)
            else None,
            recipient=email(record.get(recipient_field)),
            occurred_at=from_iso(record.get(time_field)),
            url=text(record.get("OriginalLink")) if kind == EventType.CLICK else None,
            bounce=bounce,
            raw=record,
        )

    @staticmethod
    def _type(record_type: str, record: dict[str, Any]) -> str | None:
        if record_type == "Bounce":
            bounce_type = record.get("Type")
            if record.get("Inactive") is True or bounce_type in _HARD_BOUNCES:
                return EventType.BOUNCE_HARD  # Inactive: Postmark has suppressed the address
            if bounce_type in _SOFT_BOUNCES:
                return EventType.BOUNCE_SOFT
            return None  # AutoResponder, AddressChange, ... are not delivery failures
        if record_type == "SubscriptionChange":
            if record.get("SuppressSending") is not True:
                return None  # a reactivation
            reason = record.get("SuppressionReason")
            return _SUPPRESSIONS.get(reason) if isinstance(reason, str) else None
        return {
            "Delivery": EventType.DELIVERED,
            "Open": EventType.OPEN,
            "Click": EventType.CLICK,
            "SpamComplaint": EventType.COMPLAINT,
        }[record_type]

    @staticmethod
    def _dedupe_key(
        record_type: str, record: dict[str, Any], time_field: str, recipient_field: str
    ) -> str:
        # Only Bounce and SpamComplaint records carry an ID (both from the bounce ID space).
        if record_type in ("Bounce", "SpamComplaint") and (bounce_id := text(record.get("ID"))):
            return bounce_id
        return content_hash(
            record_type,
            record.get("MessageID"),
            record.get(recipient_field),
            record.get(time_field),
            record.get("OriginalLink"),
        )
