"""The journey's read of the product events it listens to (`load_tracked_events`)."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio import activity

from domain.conditions import parse_utc
from domain.journey import ActivityName, ProductEvent, TrackedEventsQuery
from storage.tracked_events import events_since, product_event


class TrackedEventActivities:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @activity.defn(name=ActivityName.LOAD_TRACKED_EVENTS)
    def load_tracked_events(self, query: TrackedEventsQuery) -> list[ProductEvent]:
        """The person's events of the names asked since the enrollment, oldest first: a
        read-only session (no writer lock), so it never queues behind the sends."""
        with Session(self.engine) as session:  # the enrollment's address, normalised
            rows = events_since(session, query.email, query.names, parse_utc(query.since))
        return [product_event(row) for row in rows]
