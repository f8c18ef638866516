"""`load_tracked_events` reads back a person's product events since the enrollment, from the
real table on both databases: the journey decides on them even when no signal reached it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from activities.tracked import TrackedEventActivities
from domain.journey import TrackedEventsQuery
from storage.db import session_scope
from storage.models import TrackedEvent

ENROLLED = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def test_only_that_persons_events_of_those_names_since_the_enrollment(engine: Engine) -> None:
    rows = [
        ("e-before", "maya@example.com", "order.completed", ENROLLED - timedelta(seconds=1)),
        ("e-at", "maya@example.com", "order.completed", ENROLLED),
        ("e-later", "maya@example.com", "order.completed", ENROLLED + timedelta(hours=5)),
        ("e-trial", "maya@example.com", "trial.started", ENROLLED + timedelta(hours=1)),
        ("e-other-name", "maya@example.com", "page.viewed", ENROLLED + timedelta(hours=1)),
        ("e-other-person", "li@example.com", "order.completed", ENROLLED + timedelta(hours=1)),
    ]
    with session_scope(engine) as session:
        for event_id, email, name, occurred in rows:
            session.add(
                TrackedEvent(
                    event_id=event_id, email=email, name=name, occurred_at=occurred,
                    properties={"cart_id": "c1", "total": 12.5},
                )
            )  # fmt: skip
    query = TrackedEventsQuery(
        "maya@example.com", ["order.completed", "trial.started"], ENROLLED.isoformat(), 7
    )
    events = TrackedEventActivities(engine).load_tracked_events(query)
    assert [e.event_id for e in events] == ["e-at", "e-trial", "e-later"], "oldest first"
    assert events[0].name == "order.completed"
    assert events[0].properties == {"cart_id": "c1", "total": 12.5}
    assert datetime.fromisoformat(events[2].occurred_at) == ENROLLED + timedelta(hours=5)
    assert datetime.fromisoformat(events[2].occurred_at).utcoffset() == timedelta(0)


def test_no_names_reads_nothing(engine: Engine) -> None:
    query = TrackedEventsQuery("maya@example.com", [], ENROLLED.isoformat())
    assert TrackedEventActivities(engine).load_tracked_events(query) == []
