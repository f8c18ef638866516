"""Every engagement event, from any source — `POST /api/events`, provider webhooks, our own
pixel, redirect and unsubscribe, and an SMTP server refusing a recipient — takes this one path:
correlate it to its delivery, store it once, update the stats columns on its first insert,
suppress the address on a terminal event (and let the reputation guard judge the campaign),
then signal the journey and mark it signalled.

Stored first, signalled after: the caller answers 2xx once the rows are committed, and rows a
crash left unsignalled are picked up by the outbox (services/outbox.py).

`Events` is built once from settings, with the reputation limits in it: no caller can pass the
wrong ones (the webhook and tracking paths once silently used the defaults)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import bindparam, update
from sqlalchemy.engine import CursorResult, Engine
from sqlmodel import Session, col, select

from domain.events import IncomingEvent
from domain.journey import (
    TERMINAL_EVENTS,
    DeliveryStatus,
    EngagementSignal,
    EventType,
    JourneyStatus,
)
from domain.reputation import ReputationLimits
from observability.metrics import EVENTS_RECEIVED
from services import webhooks_out
from services.journeys import Journeys
from storage.counters import CAMPAIGN, Metric, bump, event_milestones, reach_milestones
from storage.db import session_scope
from storage.inserts import insert_ignoring_conflicts
from storage.models import Delivery, Enrollment, ErasedDelivery, Event, Suppression, utcnow
from storage.reputation import guard_campaign
from storage.suppression import hashed, is_hashed, suppressed_among

log = logging.getLogger(__name__)

Row = dict[str, Any]  # an event row as inserted


@dataclass
class StoredEvent:
    id: int
    duplicate: bool


@dataclass
class PendingSignal:
    event_id: int
    workflow_id: str
    signal: EngagementSignal


SIGNAL_CHUNK = 1000  # events read back and signalled per round


class Events:
    def __init__(
        self, engine: Engine, limits: ReputationLimits, journeys: Journeys | None = None
    ) -> None:
        self.engine = engine
        self.limits = limits
        self.journeys = journeys  # None: store only (the worker, whose journeys learn otherwise)

    def store(self, events: list[IncomingEvent], signalled: bool = False) -> list[StoredEvent]:
        """Store a batch in one transaction; one entry per input event, in order. A hard bounce
        or complaint may pause its campaign (storage/reputation.py). `signalled`: the journey
        knows already (the send activity's own result tells it of an SMTP bounce)."""
        return store_events(self.engine, events, self.limits, signalled)

    def record_smtp_bounce(self, delivery_id: str, code: int, message: str) -> None:
        """The SMTP server refused the recipient: an event like a provider's hard bounce (the
        address suppressed, the step's funnel counted, the guard told), and the delivery row
        marked bounced with the server's answer."""
        event = IncomingEvent(
            provider="smtp",
            dedupe_key=delivery_id,
            type=EventType.BOUNCE_HARD,
            raw_type=str(code),
            delivery_id=delivery_id,
            raw={"code": code, "message": message},
        )
        self.store([event], signalled=True)
        with session_scope(self.engine) as session:
            session.execute(
                update(Delivery)
                .where(col(Delivery.id) == delivery_id)
                .values(status=DeliveryStatus.BOUNCED, error=f"{code} {message}")
            )

    def pending(
        self,
        event_ids: list[int] | None = None,
        received_before: datetime | None = None,
        limit: int = SIGNAL_CHUNK,
    ) -> list[PendingSignal]:
        return pending_signals(self.engine, event_ids, received_before, limit)

    async def deliver(self, pending: list[PendingSignal]) -> int:
        """Signal, then mark done the events all of whose signals went through. How many."""
        from starlette.concurrency import run_in_threadpool

        if not pending:
            return 0
        assert self.journeys is not None, "these Events only store"
        results = await self.journeys.signal_events([(p.workflow_id, p.signal) for p in pending])
        failed = {p.event_id for p, ok in zip(pending, results, strict=True) if not ok}
        done = {p.event_id for p in pending} - failed
        await run_in_threadpool(mark_signalled, self.engine, done)
        return len(done)

    async def signal(self, event_ids: list[int]) -> int:
        """Signal these stored events' journeys, a chunk at a time. How many are done."""
        from starlette.concurrency import run_in_threadpool

        done = 0
        for start in range(0, len(event_ids), SIGNAL_CHUNK):
            chunk = event_ids[start : start + SIGNAL_CHUNK]
            pending = await run_in_threadpool(self.pending, chunk, None, SIGNAL_CHUNK)
            done += await self.deliver(pending)
        return done

    async def signal_quietly(self, event_ids: list[int]) -> None:
        """`signal`, after an answer was sent: a failure is logged, and the outbox retries."""
        try:
            await self.signal(event_ids)
        except Exception:  # Temporal unreachable, say: the rows stay unsignalled
            log.warning(
                "signalling %d events failed; the outbox retries", len(event_ids), exc_info=True
            )


def store_events(
    engine: Engine, events: list[IncomingEvent], limits: ReputationLimits, signalled: bool = False
) -> list[StoredEvent]:
    if not events:
        return []
    for event in events:
        EVENTS_RECEIVED.labels(event.provider, event.type or "unmapped").inc()
    with session_scope(engine) as session:
        deliveries = _deliveries_for(session, events)
        enrollments = {
            e.id: e
            for e in session.exec(
                select(Enrollment).where(
                    col(Enrollment.id).in_({d.enrollment_id for d in deliveries.values()})
                )
            )
        }
        erased = _erased(session, events, deliveries)
        rows: list[Row] = []
        for event in events:
            delivery = _match(deliveries, event)
            enrollment = enrollments.get(delivery.enrollment_id) if delivery else None
            forget = id(event) in erased  # stored without the person: type and time only
            rows.append(
                dict(
                    provider=event.provider,
                    dedupe_key=event.dedupe_key,
                    type=event.type,
                    raw_type=event.raw_type,
                    delivery_id=delivery.id if delivery else event.delivery_id,
                    enrollment_id=enrollment.id if enrollment else None,
                    campaign_id=delivery.campaign_id if delivery else None,
                    step_id=delivery.step_id if delivery else None,
                    email=None if forget else (enrollment.email if enrollment else event.recipient),
                    url=None if forget else event.url,
                    machine=event.machine,
                    machine_reason=event.machine_reason,
                    occurred_at=event.occurred_at or utcnow(),
                    received_at=utcnow(),
                    # Nothing to tell a journey about an unmatched or stored-only event.
                    signalled=signalled or enrollment is None or event.type is None,
                    raw=None if forget else event.raw,
                )
            )
        _suppress_erased(session, [e for e in events if id(e) in erased])
        _signal_only_what_changes_the_journey(session, rows)
        inserted = set(insert_ignoring_conflicts(session, Event, rows))
        ids = {
            (e.provider, e.dedupe_key): e.id or 0
            for e in session.exec(
                select(Event).where(
                    col(Event.provider).in_({r["provider"] for r in rows}),
                    col(Event.dedupe_key).in_({r["dedupe_key"] for r in rows}),
                )
            )
        }
        result: list[StoredEvent] = []
        projected: set[int] = set()
        firsts: list[Row] = []
        for row in rows:
            event_id = ids[(row["provider"], row["dedupe_key"])]
            first = event_id in inserted and event_id not in projected
            if first and row["enrollment_id"] is not None:
                firsts.append(row)
            projected.add(event_id)
            result.append(StoredEvent(id=event_id, duplicate=not first))
        _project(session, firsts, limits)
        return result


def _deliveries_for(session: Session, events: list[IncomingEvent]) -> dict[str, Delivery]:
    ids = {e.delivery_id for e in events if e.delivery_id}
    message_ids = {e.message_id for e in events if e.message_id and not e.delivery_id}
    found: dict[str, Delivery] = {}
    if ids:
        for d in session.exec(select(Delivery).where(col(Delivery.id).in_(ids))):
            found[d.id] = d
    if message_ids:
        for d in session.exec(select(Delivery).where(col(Delivery.message_id).in_(message_ids))):
            found[f"mid:{d.message_id}"] = d
    return found


def _signal_only_what_changes_the_journey(session: Session, rows: list[Row]) -> None:
    """Mark signalled already (stored and counted, never signalled) the engagement a journey
    cannot act on: machine opens and clicks, and every human open or click after the first of
    its delivery (and link). Every signal is an event in the journey's history: a flood of
    pixel or link hits made Temporal terminate the workflow for its history size."""
    engagement = (EventType.OPEN, EventType.CLICK)
    candidates = [r for r in rows if r["type"] in engagement and not r["signalled"]]
    if not candidates:
        return
    seen = {  # what the journeys already heard of, or will: (delivery, "open") / (.., url)
        _engagement_key(delivery_id, kind, url)
        for delivery_id, kind, url in session.exec(
            select(Event.delivery_id, Event.type, Event.url)
            .where(
                col(Event.delivery_id).in_({r["delivery_id"] for r in candidates}),
                col(Event.type).in_(engagement),
                col(Event.machine).is_(False),
            )
            .distinct()
        )
    }
    for row in candidates:
        key = _engagement_key(row["delivery_id"], row["type"], row["url"])
        row["signalled"] = row["machine"] or key in seen
        seen.add(key)


def _engagement_key(
    delivery_id: str | None, kind: str | None, url: str | None
) -> tuple[str | None, ...]:
    return (
        (delivery_id, kind or "", url or "") if kind == EventType.CLICK else (delivery_id, "open")
    )


def _erased(
    session: Session, events: list[IncomingEvent], deliveries: dict[str, Delivery]
) -> set[int]:
    """The events (by id()) about an erased person: about a delivery an erasure deleted, or
    naming an address suppressed only in its hashed form."""
    unmatched = [e for e in events if _match(deliveries, e) is None]
    refs = {ref: e for e in unmatched if (ref := _delivery_ref(e))}
    gone = set(
        session.exec(select(ErasedDelivery.id).where(col(ErasedDelivery.id).in_(refs))).all()
        if refs
        else []
    )
    recipients = {e.recipient.strip().lower() for e in unmatched if e.recipient}
    hidden = {a for a, s in suppressed_among(session, recipients).items() if is_hashed(s.email)}
    return {
        id(e)
        for e in unmatched
        if _delivery_ref(e) in gone or (e.recipient and e.recipient.strip().lower() in hidden)
    }


def _delivery_ref(event: IncomingEvent) -> str | None:
    """The delivery id an event names: its own, or the one our Message-ID carries."""
    return event.delivery_id or (event.message_id or "").partition("@")[0] or None


def _suppress_erased(session: Session, events: list[IncomingEvent]) -> None:
    """A terminal event about an erased address suppresses it, in the hashed form only."""
    rows = {
        hashed(e.recipient): dict(
            email=hashed(e.recipient), reason=e.type, source=e.provider, created_at=utcnow()
        )
        for e in events
        if e.type in TERMINAL_EVENTS and e.recipient
    }
    insert_ignoring_conflicts(session, Suppression, list(rows.values()), returning="email")


def _match(deliveries: dict[str, Delivery], event: IncomingEvent) -> Delivery | None:
    if event.delivery_id and event.delivery_id in deliveries:
        return deliveries[event.delivery_id]
    if event.message_id:
        return deliveries.get(f"mid:{event.message_id}")
    return None


def _project(session: Session, rows: list[Row], limits: ReputationLimits) -> None:
    """Keep the stats columns and the suppression list current, on events' first insert: a few
    statements per batch (per enrollment, not per event), so a 1,000-event batch stays fast."""
    first_open: dict[int, datetime] = {}
    first_click: dict[int, datetime] = {}
    suppress: dict[str, Row] = {}
    campaign_of: dict[int, int] = {}
    milestones: list[tuple[int, int, str, Metric]] = []
    for row in rows:
        occurred: datetime = row["occurred_at"]
        enrollment_id: int = row["enrollment_id"]
        human = not row["machine"]
        campaign_of[enrollment_id] = row["campaign_id"]
        if row["step_id"] is not None and row["delivery_id"]:
            key = (row["campaign_id"], row["step_id"], row["delivery_id"])
            milestones += [(*key, m) for m in event_milestones(row["type"], row["machine"])]
        if human and row["type"] in (EventType.OPEN, EventType.CLICK):
            first_open[enrollment_id] = min(first_open.get(enrollment_id, occurred), occurred)
        if human and row["type"] == EventType.CLICK:
            first_click[enrollment_id] = min(first_click.get(enrollment_id, occurred), occurred)
        if row["type"] in TERMINAL_EVENTS and row["email"]:
            suppress.setdefault(
                row["email"],
                dict(
                    email=row["email"],
                    reason=row["type"],
                    source=row["provider"],
                    created_at=utcnow(),
                ),
            )
    webhooks_out.engagement_recorded(session, rows)  # journey events out: bounces, unsubscribes
    _set_first(session, "opened_at", first_open, campaign_of, Metric.OPENED)
    _set_first(session, "clicked_at", first_click, campaign_of, Metric.CLICKED)
    reach_milestones(session, milestones)  # the funnel's per-step counters
    # ON CONFLICT DO NOTHING: concurrent requests suppressing one address must not collide.
    insert_ignoring_conflicts(session, Suppression, list(suppress.values()), returning="email")
    session.flush()
    reputation_hits = {
        row["campaign_id"]
        for row in rows
        if row["type"] in (EventType.BOUNCE_HARD, EventType.COMPLAINT) and row["campaign_id"]
    }
    for campaign_id in reputation_hits:
        guard_campaign(session, campaign_id, limits)


def _set_first(
    session: Session,
    column: str,
    first: dict[int, datetime],
    campaign_of: dict[int, int],
    metric: Metric,
) -> None:
    """Set enrollments' first open/click time where still unset, and count those set: one
    executemany per campaign, not a statement per enrollment (a 500-event batch holds the
    database's write lock for less)."""
    table = Enrollment.__table__  # type: ignore[attr-defined]
    statement = (
        update(table)
        .where(table.c.id == bindparam("enrollment_id"), table.c[column].is_(None))
        .values({column: bindparam("occurred")})
    )
    by_campaign: dict[int, list[Row]] = {}
    for enrollment_id, occurred in first.items():
        params = {"enrollment_id": enrollment_id, "occurred": occurred}
        by_campaign.setdefault(campaign_of[enrollment_id], []).append(params)
    for campaign_id, batch in by_campaign.items():
        changed = cast(CursorResult[Any], session.execute(statement, batch)).rowcount
        bump(session, campaign_id, CAMPAIGN, metric, changed)


def signal_key(row: Event) -> str:
    """The semantic idempotency key the journey dedupes on: one real-world fact may reach us
    from several sources (our pixel and the provider's, a bounce then a dropped)."""
    if row.type in TERMINAL_EVENTS:
        return f"{row.delivery_id}:{row.type}"
    if row.type in (EventType.OPEN, EventType.CLICK):
        minute = row.occurred_at.strftime("%Y%m%d%H%M")
        return f"{row.delivery_id}:{row.type}:{minute}:{row.url or ''}:{int(row.machine)}"
    return f"{row.provider}:{row.dedupe_key}"


def pending_signals(
    engine: Engine,
    event_ids: list[int] | None = None,
    received_before: datetime | None = None,
    limit: int = 1000,
) -> list[PendingSignal]:
    """Stored events not yet signalled: to their own journey, and for a terminal event (an
    unsubscribe, hard bounce or complaint) to every running journey of that address."""
    with session_scope(engine) as session:
        query = select(Event).where(col(Event.signalled).is_(False))
        if event_ids is not None:
            query = query.where(col(Event.id).in_(event_ids))
        if received_before is not None:
            query = query.where(col(Event.received_at) < received_before)
        rows = session.exec(query.order_by(col(Event.id)).limit(limit)).all()
        if not rows:
            return []
        own = {
            e.id: e
            for e in session.exec(
                select(Enrollment).where(col(Enrollment.id).in_({r.enrollment_id for r in rows}))
            )
        }
        terminal_emails = {r.email for r in rows if r.type in TERMINAL_EVENTS and r.email}
        others: dict[str, list[Enrollment]] = {}
        if terminal_emails:
            for e in session.exec(
                select(Enrollment).where(
                    col(Enrollment.email).in_(terminal_emails),
                    col(Enrollment.status) == JourneyStatus.ACTIVE,
                )
            ):
                others.setdefault(e.email, []).append(e)
        pending: list[PendingSignal] = []
        for row in rows:
            signal = EngagementSignal(
                event_id=signal_key(row),
                type=row.type or "",
                step_id=row.step_id,
                url=row.url,
                machine=row.machine,
            )
            enrollment = own.get(row.enrollment_id)
            if enrollment is not None:
                pending.append(PendingSignal(row.id or 0, enrollment.workflow_id, signal))
            for other in others.get(row.email or "", []):
                if enrollment is None or other.id != enrollment.id:
                    pending.append(PendingSignal(row.id or 0, other.workflow_id, _foreign(signal)))
        return pending


def _foreign(signal: EngagementSignal) -> EngagementSignal:
    # For another campaign's journey the step id means nothing; the exit is what counts.
    return EngagementSignal(event_id=signal.event_id, type=signal.type)


def mark_signalled(engine: Engine, event_ids: set[int]) -> None:
    if not event_ids:
        return
    with session_scope(engine) as session:
        session.execute(update(Event).where(col(Event.id).in_(event_ids)).values(signalled=True))
