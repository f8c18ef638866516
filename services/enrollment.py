"""The one enrollment pipeline: validate and normalise the addresses, drop the suppressed and
the repeated, write the enrollment rows (so counts read their own writes), start one journey
per new row, mark them started. The synchronous route, the batch job and the outbox all use it,
so every path counts in the stats and in `drip_enrollments_total` alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import update
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.sql.selectable import Exists
from sqlmodel import Session, col, select

from domain.enrollment import RowState
from domain.journey import CampaignStatus, JourneyPlan, JourneyStatus, workflow_id
from mail.addresses import EmailNotValidError, normalise_email
from mail.headers import field_problem
from observability.metrics import count_enrollments
from services import reentry, webhooks_out
from services.errors import Conflict
from services.journeys import Journeys, JourneyStart
from storage import tracked_events
from storage.counters import CAMPAIGN, Metric, bump
from storage.db import session_scope
from storage.inserts import dialect_insert
from storage.models import Campaign, Enrollment, EnrollmentBatch, EnrollmentBatchRow, utcnow
from storage.plans import plans_of, read_plan
from storage.suppression import suppressed_among

MARK_CHUNK = 1000  # ids per UPDATE ... IN (...)


@dataclass
class Candidate:
    """An address someone asked to enroll, as given; `trigger_event_id`: the tracked event
    that enrolls it through the campaign's trigger (services/tracking.py)."""

    email: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    trigger_event_id: str | None = None


@dataclass
class Verdict:
    """What became of one candidate: ENROLLED (with its new row), DUPLICATE or REJECTED."""

    state: RowState
    reason: str | None = None
    enrollment_id: int | None = None
    same_as: int | None = None  # a duplicate within the request: the index of the first
    email: str | None = None  # the normalised address, once it validated


@dataclass
class Refusal:
    email: str
    reason: str


@dataclass
class EnrollSummary:
    enrolled: int
    already_enrolled: int
    rejected: list[Refusal]


def require_active(campaign: Campaign) -> None:
    if campaign.status != CampaignStatus.ACTIVE:
        raise Conflict(f"campaign {campaign.id} is {campaign.status}: only active campaigns enroll")


def decide(session: Session, campaign_id: int, candidates: Sequence[Candidate]) -> list[Verdict]:
    """Enroll those candidates that may be, in the caller's transaction; one verdict each, in
    order. Counts the new rows in the campaign's stats and every verdict in the metric."""
    verdicts: list[Verdict | None] = [None] * len(candidates)
    wanted: dict[str, int] = {}  # normalised address -> index of its first candidate
    for index, candidate in enumerate(candidates):
        try:
            email = normalise_email(candidate.email)
        except EmailNotValidError as exc:
            verdicts[index] = Verdict(RowState.REJECTED, f"invalid email: {exc}")
            continue
        if problem := field_problem(dict(candidate.fields)):  # e.g. control characters
            verdicts[index] = Verdict(RowState.REJECTED, problem)
            continue
        first = wanted.setdefault(email, index)
        if first != index:
            verdicts[index] = Verdict(RowState.DUPLICATE, same_as=first)
    if wanted:
        for email, suppression in suppressed_among(session, wanted).items():  # plain or hashed
            index = wanted.pop(email)
            verdicts[index] = Verdict(
                RowState.REJECTED, f"suppressed: {suppression.reason}", email=email
            )
    entries, refused = reentry.entries(session, campaign_id, wanted)
    for email, reason in refused.items():
        verdicts[wanted.pop(email)] = Verdict(RowState.DUPLICATE, reason, email=email)
    inserted = _insert(
        session, campaign_id, {e: (candidates[i], entries.get(e, 1)) for e, i in wanted.items()}
    )
    for email, index in wanted.items():
        if email in inserted:
            verdicts[index] = Verdict(RowState.ENROLLED, enrollment_id=inserted[email])
        else:
            verdicts[index] = Verdict(RowState.DUPLICATE, reentry.ALREADY_ENROLLED)
    done = [v for v in verdicts if v is not None]
    assert len(done) == len(candidates)
    bump(session, campaign_id, CAMPAIGN, Metric.RECIPIENTS, len(inserted))
    count_enrollments(
        enrolled=len(inserted),
        already_enrolled=sum(v.state == RowState.DUPLICATE for v in done),
        rejected=sum(v.state == RowState.REJECTED for v in done),
    )
    return done


def _insert(
    session: Session, campaign_id: int, wanted: Mapping[str, tuple[Candidate, int]]
) -> dict[str, int]:
    """INSERT ... ON CONFLICT DO NOTHING, each address at its entry number (a concurrent
    request writing the same entry wins, this one's row is skipped); {email: enrollment id} of
    the rows inserted now."""
    if not wanted:
        return {}
    now = utcnow()
    values = [
        dict(
            campaign_id=campaign_id,
            email=email,
            entry=entry,
            fields=dict(candidate.fields),
            trigger_event_id=candidate.trigger_event_id,
            status=JourneyStatus.ACTIVE,
            current_step=0,
            workflow_id=workflow_id(campaign_id, email, entry),
            workflow_started=False,
            created_at=now,
        )
        for email, (candidate, entry) in wanted.items()
    ]
    table = Enrollment.__table__  # type: ignore[attr-defined]
    insert = dialect_insert(session.get_bind().dialect.name)
    statement = (
        insert(table).values(values).on_conflict_do_nothing().returning(table.c.email, table.c.id)
    )
    return {email: enrollment_id for email, enrollment_id in session.execute(statement)}


def journey_starts(
    session: Session, campaign_id: int, enrollment_ids: Sequence[int]
) -> list[JourneyStart]:
    """The journeys to start for these enrollments, each handed the campaign's plan."""
    if not enrollment_ids:
        return []
    plan = read_plan(session, campaign_id)
    rows = list(session.exec(select(Enrollment).where(col(Enrollment.id).in_(enrollment_ids))))
    return _starts(session, rows, {campaign_id: plan})


def _starts(
    session: Session, rows: Sequence[Enrollment], plans: Mapping[int, JourneyPlan | None]
) -> list[JourneyStart]:
    """Each enrollment's journey start: its plan, entry, enrollment time and trigger event."""
    triggers = tracked_events.by_event_ids(
        session, {e.trigger_event_id for e in rows if e.trigger_event_id}
    )
    return [
        JourneyStart(
            e.id or 0,
            e.campaign_id,
            e.email,
            e.workflow_id,
            plans[e.campaign_id],
            entry=e.entry,
            enrolled_at=tracked_events.iso_utc(e.created_at),
            trigger=tracked_events.product_event(triggers[e.trigger_event_id])
            if e.trigger_event_id in triggers
            else None,
        )
        for e in rows
    ]


def write(
    engine: Engine, campaign_id: int, candidates: Sequence[Candidate]
) -> tuple[EnrollSummary, list[JourneyStart]]:
    """Decide and write the enrollments in one transaction; the journeys to start."""
    with session_scope(engine) as session:
        verdicts = decide(session, campaign_id, candidates)
        new = [v.enrollment_id for v in verdicts if v.enrollment_id is not None]
        starts = journey_starts(session, campaign_id, new)
    summary = EnrollSummary(
        enrolled=len(new),
        already_enrolled=sum(v.state == RowState.DUPLICATE for v in verdicts),
        rejected=[
            Refusal(v.email or c.email, v.reason or "")
            for c, v in zip(candidates, verdicts, strict=True)
            if v.state == RowState.REJECTED
        ],
    )
    return summary, starts


async def enroll(
    engine: Engine, journeys: Journeys, campaign_id: int, candidates: Sequence[Candidate]
) -> EnrollSummary:
    """Enroll now: rows written, journeys started, marked started. A journey that did not
    start (Temporal down) is started by the outbox later."""
    from starlette.concurrency import run_in_threadpool

    summary, starts = await run_in_threadpool(write, engine, campaign_id, candidates)
    started = await journeys.start(starts)
    await run_in_threadpool(mark_started, engine, started)
    return summary


def mark_started(
    engine: Engine, enrollment_ids: Sequence[int], batch_id: int | None = None
) -> None:
    """Record that these enrollments' journeys are in Temporal. For a batch, its staged rows
    move to STARTED and its `started` count goes up in the same transaction."""
    if not enrollment_ids:
        return
    with session_scope(engine) as session:
        moved = 0
        for start in range(0, len(enrollment_ids), MARK_CHUNK):
            chunk = list(enrollment_ids[start : start + MARK_CHUNK])
            session.execute(
                update(Enrollment)
                .where(col(Enrollment.id).in_(chunk))
                .values(workflow_started=True)
            )
            webhooks_out.journeys_started(session, chunk)  # journey events out
            if batch_id is not None:
                moved += cast(
                    CursorResult[Any],
                    session.execute(
                        update(EnrollmentBatchRow)
                        .where(
                            col(EnrollmentBatchRow.batch_id) == batch_id,
                            col(EnrollmentBatchRow.enrollment_id).in_(chunk),
                            col(EnrollmentBatchRow.state) == RowState.ENROLLED,
                        )
                        .values(state=RowState.STARTED)
                    ),
                ).rowcount
        if batch_id is not None:
            session.execute(
                update(EnrollmentBatch)
                .where(col(EnrollmentBatch.id) == batch_id)
                .values(started=EnrollmentBatch.started + moved, updated_at=utcnow())
            )


def _owned_by_a_batch() -> Exists:
    # A batch job starts its own rows, slice by slice: leave them to it.
    return (
        select(EnrollmentBatchRow.id)
        .where(
            EnrollmentBatchRow.enrollment_id == Enrollment.id,
            EnrollmentBatchRow.state == RowState.ENROLLED,
        )
        .exists()
    )


def unstarted(engine: Engine, created_before: datetime, limit: int = 1000) -> list[JourneyStart]:
    """Enrollments whose journey did not start (for the outbox), outside any running batch."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(Enrollment)
            .where(
                col(Enrollment.workflow_started).is_(False),
                col(Enrollment.created_at) < created_before,
                ~_owned_by_a_batch(),
            )
            .order_by(col(Enrollment.id))
            .limit(limit)
        ).all()
        return _starts(session, rows, plans_of(session, {e.campaign_id for e in rows}))
