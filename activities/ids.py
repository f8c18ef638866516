"""Delivery ids: opaque, sortable, `[A-Za-z0-9_]`, no personal data (they travel to providers)."""

from ulid import ULID


def new_delivery_id() -> str:
    return f"snd_{ULID()}"
