"""Goal conversions, recorded where a tracked event is stored (services/tracking.py), in its
transaction.

A campaign's goal (`goal_event`, matching `goal_where`) performed by an address enrolled in it,
at or after the enrollment, converts that journey — running or already finished — when it
happens within `goal_window_hours` of the last message the journey sent before it (or of the
enrollment, when none was sent yet; no window: any time). At most once per journey (the
`conversion` row's key), attributed to that last step (last touch; step 0 when none; an A/B
holdout's decision counts as its step's touch, so a holdout's conversions are measured), and
counted per step and per campaign (storage/counters.py) in the same transaction. Ending the
journey itself (`exit`, status converted) is the journey's own doing, when it is signalled."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from domain.conditions import where_matches
from domain.journey import DeliveryStatus
from storage.counters import count_conversion
from storage.inserts import insert_ignoring_conflicts
from storage.models import Campaign, Conversion, Delivery, Enrollment
from storage.tracked_events import IN_CHUNK, as_utc


@dataclass
class GoalEvent:
    """A tracked event just stored, as conversions need it."""

    event_id: str
    email: str
    name: str
    properties: dict[str, Any]
    occurred_at: datetime


def record(session: Session, events: Sequence[GoalEvent]) -> list[Conversion]:
    """Record the conversions these new events make; the conversions recorded now."""
    names = {e.name for e in events}
    goals = {
        c.id: c
        for c in session.exec(select(Campaign).where(col(Campaign.goal_event).in_(names)))
        if c.id is not None
    }
    if not goals:
        return []
    journeys = _enrollments(session, {e.email for e in events}, list(goals))
    if not journeys:
        return []
    ids = [e.id for e in journeys if e.id is not None]
    done = set(
        session.exec(select(Conversion.enrollment_id).where(col(Conversion.enrollment_id).in_(ids)))
    )
    sent = _sent_deliveries(session, ids)
    made: list[Conversion] = []
    variant_of: dict[int, str | None] = {}  # enrollment id -> the last touch's variant
    for event in sorted(events, key=lambda e: as_utc(e.occurred_at)):  # the first one counts
        at = as_utc(event.occurred_at)
        for journey in journeys:
            campaign = goals[journey.campaign_id]
            if (
                journey.id in done
                or journey.email != event.email
                or campaign.goal_event != event.name
                or not where_matches(campaign.goal_where, event.properties)
                or at < as_utc(journey.created_at)
            ):
                continue
            last = next((d for d in sent.get(journey.id or 0, []) if _sent_at(d) <= at), None)
            since = _sent_at(last) if last else as_utc(journey.created_at)
            window = campaign.goal_window_hours
            if window is not None and at - since > timedelta(hours=window):
                continue
            done.add(journey.id or 0)
            variant_of[journey.id or 0] = last.variant if last else None
            made.append(
                Conversion(
                    enrollment_id=journey.id or 0,
                    campaign_id=journey.campaign_id,
                    step_id=last.step_id if last else 0,
                    step_order=last.step_order if last else 0,
                    event_id=event.event_id,
                    occurred_at=at,
                )
            )
    rows = [c.model_dump() for c in made]
    inserted = set(insert_ignoring_conflicts(session, Conversion, rows, "enrollment_id"))
    recorded = [c for c in made if c.enrollment_id in inserted]  # a racing request may have won
    for conversion in recorded:
        count_conversion(session, conversion, variant_of[conversion.enrollment_id])
    return recorded


def _enrollments(session: Session, emails: set[str], campaign_ids: list[int]) -> list[Enrollment]:
    found: list[Enrollment] = []
    addresses = sorted(emails)
    for start in range(0, len(addresses), IN_CHUNK):
        found += session.exec(
            select(Enrollment).where(
                col(Enrollment.email).in_(addresses[start : start + IN_CHUNK]),
                col(Enrollment.campaign_id).in_(campaign_ids),
            )
        )
    return found


def _sent_deliveries(session: Session, enrollment_ids: list[int]) -> dict[int, list[Delivery]]:
    """{enrollment id: its deliveries sent (and its A/B holdouts), the latest first}."""
    sent: dict[int, list[Delivery]] = {}
    for start in range(0, len(enrollment_ids), IN_CHUNK):
        for d in session.exec(
            select(Delivery).where(
                col(Delivery.enrollment_id).in_(enrollment_ids[start : start + IN_CHUNK]),
                ((col(Delivery.status) == DeliveryStatus.SENT) & col(Delivery.sent_at).is_not(None))
                | (col(Delivery.status) == DeliveryStatus.HOLDOUT),
            )
        ):
            sent.setdefault(d.enrollment_id, []).append(d)
    for deliveries in sent.values():
        deliveries.sort(key=_sent_at, reverse=True)
    return sent


def _sent_at(delivery: Delivery) -> datetime:
    return as_utc(delivery.sent_at or delivery.decided_at)  # a holdout: when it was decided
