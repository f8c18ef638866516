"""Tracked product events (the `tracked_event` table): written and listed for the API, read
back by journeys (`events_since`), and the journeys and campaigns that listen to them."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, or_, update
from sqlmodel import Session, col, select

from domain.journey import JourneyStatus, ProductEvent
from storage.inserts import insert_ignoring_conflicts
from storage.models import Campaign, Enrollment, Step, TrackedEvent

IN_CHUNK = 1000  # values per IN (...)


def insert_new(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert tracked events, skipping the event ids already stored; the ids inserted now."""
    return set(insert_ignoring_conflicts(session, TrackedEvent, rows, returning="event_id"))


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


def by_event_ids(session: Session, event_ids: Collection[str]) -> dict[str, TrackedEvent]:
    found: dict[str, TrackedEvent] = {}
    ids = list(event_ids)
    for start in range(0, len(ids), IN_CHUNK):
        chunk = ids[start : start + IN_CHUNK]
        for row in session.exec(select(TrackedEvent).where(col(TrackedEvent.event_id).in_(chunk))):
            found[row.event_id] = row
    return found


def trigger_of(session: Session, enrollment: Enrollment) -> TrackedEvent | None:
    """The tracked event that enrolled this journey through its campaign's trigger, if any."""
    if enrollment.trigger_event_id is None:
        return None
    return session.exec(
        select(TrackedEvent).where(TrackedEvent.event_id == enrollment.trigger_event_id)
    ).first()


def page_of(
    session: Session, email: str, before: tuple[datetime, int] | None, limit: int
) -> list[TrackedEvent]:
    """A person's events newest first (occurred_at, then id, descending), after the row
    `before` names; up to `limit` rows."""
    query = select(TrackedEvent).where(TrackedEvent.email == email)
    if before is not None:
        at, row_id = before
        query = query.where(
            or_(
                col(TrackedEvent.occurred_at) < at,
                and_(col(TrackedEvent.occurred_at) == at, col(TrackedEvent.id) < row_id),
            )
        )
    order = (col(TrackedEvent.occurred_at).desc(), col(TrackedEvent.id).desc())
    return list(session.exec(query.order_by(*order).limit(limit)))


def unsignalled(session: Session, received_before: datetime, limit: int) -> list[TrackedEvent]:
    return list(
        session.exec(
            select(TrackedEvent)
            .where(
                col(TrackedEvent.signalled).is_(False),
                col(TrackedEvent.received_at) < received_before,
            )
            .order_by(col(TrackedEvent.id))
            .limit(limit)
        )
    )


def mark_signalled(session: Session, event_ids: Collection[str]) -> None:
    ids = list(event_ids)
    for start in range(0, len(ids), IN_CHUNK):
        session.execute(
            update(TrackedEvent)
            .where(col(TrackedEvent.event_id).in_(ids[start : start + IN_CHUNK]))
            .values(signalled=True)
        )


def listening_campaigns(session: Session, names: Collection[str]) -> dict[str, set[int]]:
    """{event name: ids of the campaigns whose goal or a step's condition names it}, over the
    indexed columns `Campaign.goal_event` and `Step.condition_event`."""
    listening: dict[str, set[int]] = {}
    if not names:
        return listening
    goals = session.exec(
        select(Campaign.goal_event, Campaign.id).where(col(Campaign.goal_event).in_(names))
    )
    conditions = session.exec(
        select(Step.condition_event, Step.campaign_id)
        .where(col(Step.condition_event).in_(names))
        .distinct()
    )
    for name, campaign_id in [*goals, *conditions]:
        if name is not None and campaign_id is not None:
            listening.setdefault(name, set()).add(campaign_id)
    return listening


def running_enrollments(
    session: Session, emails: Collection[str], campaign_ids: Collection[int]
) -> list[Enrollment]:
    """The active enrollments of these addresses in these campaigns."""
    if not emails or not campaign_ids:
        return []
    found: list[Enrollment] = []
    addresses = list(emails)
    for start in range(0, len(addresses), IN_CHUNK):
        found += session.exec(
            select(Enrollment).where(
                col(Enrollment.email).in_(addresses[start : start + IN_CHUNK]),
                col(Enrollment.campaign_id).in_(campaign_ids),
                col(Enrollment.status) == JourneyStatus.ACTIVE,
            )
        )
    return found


def triggered_campaigns(session: Session, names: Collection[str]) -> list[Campaign]:
    """The active campaigns a tracked event of one of these names enrolls into."""
    if not names:
        return []
    return list(
        session.exec(
            select(Campaign)
            .where(col(Campaign.trigger_event).in_(names), Campaign.status == "active")
            .order_by(col(Campaign.id))
        )
    )


def product_event(row: TrackedEvent) -> ProductEvent:
    """A stored event as a journey sees it."""
    return ProductEvent(
        event_id=row.event_id,
        name=row.name,
        occurred_at=iso_utc(row.occurred_at),
        properties=dict(row.properties or {}),
    )


def as_utc(value: datetime) -> datetime:
    """Aware, in UTC: SQLite hands back naive datetimes, which are UTC here."""
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).astimezone(UTC)


def iso_utc(value: datetime) -> str:
    return as_utc(value).isoformat()


def delete_of(session: Session, email: str) -> int:
    """Delete a person's tracked events (erasure); how many."""
    result = session.execute(delete(TrackedEvent).where(col(TrackedEvent.email) == email))
    return int(result.rowcount)  # type: ignore[attr-defined]
