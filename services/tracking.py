"""Tracked product events (`POST /api/track`): something a person did in the product.

One path for one event or a batch: in one transaction, store each event once per `event_id`
(a retry changes nothing), record the goal conversions it makes (services/conversions.py) and
enroll the person through every active campaign whose trigger it matches (the one enrollment
pipeline, services/enrollment.py: suppressed addresses are refused and the answer says so).
After the commit, start the journeys it enrolled and signal `on_tracked` to the running journeys
whose plan names the event (a condition's or the goal's; the indexed `Campaign.goal_event` and
`Step.condition_event`), then mark it signalled. An event whose signal did not go through stays
unsignalled and the outbox re-drives it (`redrive`); a journey still starting reads its events
back itself, so it misses nothing either way."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from domain.conditions import where_matches
from domain.enrollment import RowState
from domain.journey import JourneyStatus, ProductEvent
from mail.addresses import EmailNotValidError, normalise_email, stored_form
from mail.headers import field_problem
from services import conversions, enrollment, reentry
from services.errors import Invalid
from services.journeys import Journeys, JourneyStart
from storage import tracked_events
from storage.db import session_scope
from storage.models import Enrollment, TrackedEvent, utcnow

log = logging.getLogger(__name__)

BATCH_LIMIT = 1000  # events per POST /api/track/batch
SIGNAL_CHUNK = 1000  # unsignalled events re-driven per outbox round


@dataclass
class TrackRequest:
    """One tracked event as asked (the API has checked its shape)."""

    email: str
    event: str
    properties: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    event_id: str | None = None
    occurred_at: datetime | None = None


@dataclass
class NotEnrolled:
    campaign_id: int
    reason: str


@dataclass
class Tracked:
    event_id: str
    duplicate: bool
    enrolled: list[int] = field(default_factory=list)  # campaign ids its trigger enrolled into
    not_enrolled: list[NotEnrolled] = field(default_factory=list)
    journeys_signalled: int = 0


@dataclass
class Rejection:
    index: int
    reason: str


@dataclass
class BatchTracked:
    accepted: int
    duplicates: int
    rejected: list[Rejection]


@dataclass
class FieldsMerged:
    email: str  # as stored
    journeys_updated: int


@dataclass
class _Stored:
    """What the transaction did: one answer per event, journeys to start, signals to send."""

    answers: list[Tracked]
    starts: list[JourneyStart]
    signals: dict[str, list[tuple[str, ProductEvent]]]  # event id -> (workflow id, event)


class Tracking:
    def __init__(self, engine: Engine, journeys: Journeys) -> None:
        self.engine = engine
        self.journeys = journeys

    async def track(self, request: TrackRequest) -> Tracked:
        """Record one event; an invalid address or fields is `Invalid` naming the field."""
        [answer] = await self._track([checked(request)])
        return answer

    async def track_batch(self, requests: Sequence[TrackRequest | Rejection]) -> BatchTracked:
        """Record a batch; the requests the API already refused come as their Rejection."""
        rejected = [r for r in requests if isinstance(r, Rejection)]
        valid: list[TrackRequest] = []
        for index, request in enumerate(requests):
            if isinstance(request, Rejection):
                continue
            try:
                valid.append(checked(request))
            except Invalid as exc:
                rejected.append(Rejection(index, f"{'.'.join(map(str, exc.loc[1:]))}: {exc.msg}"))
        answers = await self._track(valid)
        duplicates = sum(a.duplicate for a in answers)
        return BatchTracked(
            accepted=len(answers) - duplicates,
            duplicates=duplicates,
            rejected=sorted(rejected, key=lambda r: r.index),
        )

    async def _track(self, requests: list[TrackRequest]) -> list[Tracked]:
        if not requests:
            return []
        stored = await run_in_threadpool(store, self.engine, requests)
        started = await self.journeys.start(stored.starts)
        await run_in_threadpool(enrollment.mark_started, self.engine, started)
        signalled = await self._signal(stored.signals)
        for answer in stored.answers:
            answer.journeys_signalled = 0 if answer.duplicate else signalled.get(answer.event_id, 0)
        return stored.answers

    async def _signal(self, signals: dict[str, list[tuple[str, ProductEvent]]]) -> dict[str, int]:
        """Signal, and mark signalled the events all of whose signals went through (or that
        no running journey listens to any more); {event id: journeys signalled}."""
        targets = [(event_id, t) for event_id, ts in signals.items() for t in ts]
        try:
            results = await self.journeys.signal_tracked([t for _, t in targets])
        except Exception:  # Temporal unreachable, say: the rows stay unsignalled
            log.warning("signalling tracked events failed; the outbox retries", exc_info=True)
            return {}
        delivered = dict.fromkeys(signals, 0)
        failed: set[str] = set()
        for (event_id, _), ok in zip(targets, results, strict=True):
            delivered[event_id] += ok
            if not ok:
                failed.add(event_id)
        await run_in_threadpool(mark_signalled, self.engine, set(signals) - failed)
        return {event_id: n for event_id, n in delivered.items() if event_id not in failed}

    async def redrive(self, received_before: datetime) -> int:
        """The outbox's part: signal the stored events left unsignalled; how many are done."""
        signals = await run_in_threadpool(unsignalled, self.engine, received_before)
        return len(await self._signal(signals)) if signals else 0

    def merge_fields(self, email: str, fields: Mapping[str, Any]) -> FieldsMerged:
        """Merge field values into the person's running journeys (from their next step on: the
        send reads the enrollment's fields at send time)."""
        if problem := field_problem(dict(fields)):
            raise Invalid(["body", "fields"], problem)
        address = stored_form(email)
        with session_scope(self.engine) as session:
            rows = session.exec(
                select(Enrollment)
                .where(
                    Enrollment.email == address,
                    col(Enrollment.status) == JourneyStatus.ACTIVE,
                )
                .with_for_update()
            ).all()
            for row in rows:
                row.fields = {**row.fields, **fields}
                session.add(row)
            return FieldsMerged(address, len(rows))

    def events_of(
        self, email: str, before: tuple[datetime, int] | None, limit: int
    ) -> list[TrackedEvent]:
        with Session(self.engine) as session:
            return tracked_events.page_of(session, stored_form(email), before, limit)


def checked(request: TrackRequest) -> TrackRequest:
    """The request with its address normalised, or Invalid naming the wrong field."""
    try:
        email = normalise_email(request.email)
    except EmailNotValidError as exc:
        raise Invalid(["body", "email"], f"invalid email: {exc}") from exc
    if problem := field_problem(dict(request.fields)):
        raise Invalid(["body", "fields"], problem)
    return TrackRequest(
        email=email,
        event=request.event,
        properties=request.properties,
        fields=request.fields,
        event_id=request.event_id or f"evt_{uuid.uuid4().hex}",
        occurred_at=request.occurred_at,
    )


def store(engine: Engine, requests: list[TrackRequest]) -> _Stored:
    """The transaction: events, conversions, trigger enrollments; what to do after it."""
    now = utcnow()
    with session_scope(engine) as session:
        targets = _listeners(session, requests)
        rows: dict[str, dict[str, Any]] = {}
        for r in requests:
            assert r.event_id is not None
            rows.setdefault(
                r.event_id,
                dict(
                    event_id=r.event_id,
                    email=r.email,
                    name=r.event,
                    properties=r.properties,
                    occurred_at=r.occurred_at or now,
                    received_at=now,
                    # Nothing listens: nothing to signal, ever (a journey starting later reads
                    # its events back).
                    signalled=not targets.get(r.email, {}).get(r.event),
                ),
            )
        inserted = tracked_events.insert_new(session, list(rows.values()))
        new = [rows[i] for i in rows if i in inserted]
        conversions.record(
            session,
            [
                conversions.GoalEvent(
                    r["event_id"], r["email"], r["name"], r["properties"], r["occurred_at"]
                )
                for r in new
            ],
        )
        answers, starts = _enroll_by_triggers(session, requests, inserted)
    signals = {
        r["event_id"]: [
            (workflow_id, tracked_events.product_event(TrackedEvent(**r)))
            for workflow_id in targets.get(r["email"], {}).get(r["name"], [])
        ]
        for r in new
        if not r["signalled"]
    }
    return _Stored(answers, starts, signals)


def _listeners(
    session: Session, requests: Sequence[TrackRequest]
) -> dict[str, dict[str, list[str]]]:
    """{email: {event name: workflow ids of its running journeys that listen to it}}."""
    listening = tracked_events.listening_campaigns(session, {r.event for r in requests})
    campaigns = {c for ids in listening.values() for c in ids}
    running = tracked_events.running_enrollments(session, {r.email for r in requests}, campaigns)
    found: dict[str, dict[str, list[str]]] = {}
    for name, campaign_ids in listening.items():
        for e in running:
            if e.campaign_id in campaign_ids:
                found.setdefault(e.email, {}).setdefault(name, []).append(e.workflow_id)
    return found


def _enroll_by_triggers(
    session: Session, requests: Sequence[TrackRequest], inserted: set[str]
) -> tuple[list[Tracked], list[JourneyStart]]:
    """Enroll each new event's person into the active campaigns its trigger names."""
    answers: list[Tracked] = []
    answered: set[str] = set()
    triggered = tracked_events.triggered_campaigns(session, {r.event for r in requests})
    # campaign id -> [(answer, candidate)], in request order
    wanted: dict[int, list[tuple[Tracked, enrollment.Candidate]]] = {}
    for r in requests:
        assert r.event_id is not None
        first = r.event_id in inserted and r.event_id not in answered
        answered.add(r.event_id)
        answer = Tracked(event_id=r.event_id, duplicate=not first)
        answers.append(answer)
        if not first:
            continue
        for campaign in triggered:
            if campaign.trigger_event == r.event and where_matches(
                campaign.trigger_where, r.properties
            ):
                candidate = enrollment.Candidate(r.email, r.fields, trigger_event_id=r.event_id)
                wanted.setdefault(campaign.id or 0, []).append((answer, candidate))
    starts: list[JourneyStart] = []
    for campaign_id, pairs in wanted.items():
        verdicts = enrollment.decide(session, campaign_id, [c for _, c in pairs])
        for (answer, _), verdict in zip(pairs, verdicts, strict=True):
            if verdict.state == RowState.ENROLLED:
                answer.enrolled.append(campaign_id)
            else:
                reason = verdict.reason or reentry.ALREADY_ENROLLED
                answer.not_enrolled.append(NotEnrolled(campaign_id, reason))
        new = [v.enrollment_id for v in verdicts if v.enrollment_id is not None]
        starts += enrollment.journey_starts(session, campaign_id, new)
    return answers, starts


def unsignalled(
    engine: Engine, received_before: datetime
) -> dict[str, list[tuple[str, ProductEvent]]]:
    """Stored events not yet signalled, each with the running journeys listening to it now."""
    with session_scope(engine) as session:
        rows = tracked_events.unsignalled(session, received_before, SIGNAL_CHUNK)
        requests = [TrackRequest(r.email, r.name, event_id=r.event_id) for r in rows]
        targets = _listeners(session, requests)
        return {
            r.event_id: [
                (w, tracked_events.product_event(r))
                for w in targets.get(r.email, {}).get(r.name, [])
            ]
            for r in rows
        }


def mark_signalled(engine: Engine, event_ids: set[str]) -> None:
    if event_ids:
        with session_scope(engine) as session:
            tracked_events.mark_signalled(session, event_ids)
