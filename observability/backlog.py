"""The database-wide gauges operators alert on, measured by the outbox round: work accepted but
not yet in Temporal, deliveries left uncertain, campaigns the reputation guard paused.

A few COUNTs, read-only (no writer lock on SQLite), at most once per MEASURE_EVERY seconds so a
short outbox interval does not turn them into a steady load on a large database."""

from __future__ import annotations

import time
import weakref
from typing import Any

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from observability.metrics import OUTBOX_BACKLOG, REPUTATION_PAUSED_CAMPAIGNS, UNCERTAIN_DELIVERIES
from storage.models import Delivery, Enrollment, Event
from storage.reputation import auto_paused_campaigns

MEASURE_EVERY = 30.0
UNCERTAIN = "uncertain"  # the delivery status of a send that may have gone out (reliability.md)

# When each engine's database was last measured (an API's outbox, in tests several apps).
_last_measured: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()


def count(session: Session, table: type, *where: Any) -> int:
    return session.exec(select(func.count()).select_from(table).where(*where)).one()


def measure(engine: Engine) -> None:
    with Session(engine) as session:
        unstarted = count(session, Enrollment, col(Enrollment.workflow_started).is_(False))
        unsignalled = count(session, Event, col(Event.signalled).is_(False))
        uncertain = count(session, Delivery, col(Delivery.status) == UNCERTAIN)
        paused = auto_paused_campaigns(session)
    OUTBOX_BACKLOG.labels("enrollments").set(unstarted)
    OUTBOX_BACKLOG.labels("events").set(unsignalled)
    UNCERTAIN_DELIVERIES.set(uncertain)
    REPUTATION_PAUSED_CAMPAIGNS.set(paused)


def measure_now_and_then(engine: Engine) -> None:
    """`measure`, unless this engine's database was measured less than MEASURE_EVERY s ago."""
    last = _last_measured.get(engine)
    if last is not None and time.monotonic() - last < MEASURE_EVERY:
        return
    _last_measured[engine] = time.monotonic()
    measure(engine)
