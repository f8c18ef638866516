"""The one shape every incoming engagement event is normalised to, whatever its source."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class IncomingEvent:
    provider: str  # "api", "self" (our pixel/redirect/unsubscribe), "sendgrid", "postmark", ...
    dedupe_key: str  # unique per provider: a retry of the same event carries the same key
    type: str | None  # an EventType value, or None for stored-only events (processed, deferred...)
    raw_type: str  # the provider's own name for the event
    delivery_id: str | None = None  # our drip_delivery_id, when the provider echoed it
    message_id: str | None = None  # our Message-ID (no angle brackets), the fallback handle
    recipient: str | None = None
    occurred_at: datetime | None = None  # the provider's event time (timezone-aware)
    url: str | None = None  # the clicked link
    machine: bool = False
    machine_reason: str | None = None
    bounce: dict[str, Any] | None = None  # {kind, smtp_status, diagnostic}
    raw: Any = field(default=None)  # the provider's event, as received
    # A value the provider's signature makes single-use (Mailgun's token, which the signature
    # covers while the event does not): refused when it comes back with another event.
    nonce: str | None = None
