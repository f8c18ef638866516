"""Small helpers shared by the provider modules: headers, JSON, times, field access."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from webhooks.errors import WebhookAuthError, WebhookPayloadError


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup (Starlette `Headers` already is; plain dicts are not)."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise WebhookPayloadError("body is not valid JSON") from exc


def from_unix(value: Any) -> datetime | None:
    """A unix timestamp (int, float or numeric string) as an aware UTC datetime."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise WebhookPayloadError(f"bad timestamp {value!r}") from exc


def from_iso(value: Any) -> datetime | None:
    """An ISO 8601 string as an aware UTC datetime (a naive one is taken to be UTC)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise WebhookPayloadError(f"bad timestamp {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise WebhookPayloadError(f"bad timestamp {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def check_fresh(
    signed_at: datetime, now: datetime, *, max_age: timedelta, max_future: timedelta
) -> None:
    """Reject a signed timestamp outside [now - max_age, now + max_future]."""
    if signed_at < now - max_age or signed_at > now + max_future:
        raise WebhookAuthError("timestamp outside the allowed window")


def dig(obj: Any, *path: str | int) -> Any:
    """obj[p0][p1]... or None as soon as a step is missing or of the wrong kind."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(obj, list) or not -len(obj) <= step < len(obj):
                return None
            obj = obj[step]
        elif isinstance(obj, dict):
            obj = obj.get(step)
        else:
            return None
    return obj


def text(value: Any) -> str | None:
    """A non-empty string, or None (providers send "" or null for absent values)."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def email(value: Any) -> str | None:
    found = text(value)
    return found.lower() if found else None


def message_id(value: Any) -> str | None:
    """A Message-ID without its angle brackets."""
    found = text(value)
    if found is None:
        return None
    return found.strip("<>").strip() or None


def content_hash(*parts: Any) -> str:
    """A stable dedupe key for events the provider gives no id of their own."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def bounce_info(kind: str, smtp_status: Any = None, diagnostic: Any = None) -> dict[str, Any]:
    return {"kind": kind, "smtp_status": text(smtp_status), "diagnostic": text(diagnostic)}
