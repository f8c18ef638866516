"""Reading a person's tracked product events (the `tracked_event` table)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from storage.models import TrackedEvent


def events_since(
    session: Session, email: str, names: Sequence[str], since: datetime
) -> list[TrackedEvent]:
    """That person's events of these names that occurred at or after `since`, oldest first
    (served by the (email, name, occurred_at) index)."""
    if not names:
        return []
    return list(
        session.exec(
            select(TrackedEvent)
            .where(
                TrackedEvent.email == email,
                col(TrackedEvent.name).in_(list(names)),
                col(TrackedEvent.occurred_at) >= since,
            )
            .order_by(col(TrackedEvent.occurred_at), col(TrackedEvent.id))
        ).all()
    )
