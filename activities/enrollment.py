"""The enrollment batch job's activities: turn staged rows into enrollments and start their
journeys, a slice at a time, heartbeating after each.

Idempotent by the staged rows' states, which move in the same transaction as the enrollments
they write: a retried chunk skips rows already decided and (re)starts only rows enrolled but not
yet started, and a journey can never start twice (one workflow id per campaign and address,
REJECT_DUPLICATE). The next slice is written while the current one's journeys start, so the
server is kept busy with starts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from email_validator import EmailNotValidError
from sqlalchemy import delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from api.enrollment import normalise_email
from api.journeys import Journeys, JourneyStart
from domain.enrollment import BatchStatus, ChunkInput, ChunkResult, RowState
from domain.journey import CampaignStatus, workflow_id
from mail.headers import field_problem
from storage.counters import CAMPAIGN, Metric, bump
from storage.db import session_scope
from storage.models import Campaign, Enrollment, EnrollmentBatch, EnrollmentBatchRow, utcnow
from storage.plans import read_plan
from storage.suppression import suppressed_among

SLICE_ROWS = 250  # rows written, then started, per step (and per heartbeat)
# Starts in flight. A batch wants throughput, not latency: the dev server on 2 cores took
# starts fastest at 64 in flight (bench: 8: ~150/s, 16: ~170/s, 32: ~220/s, 64: ~250/s).
START_CONCURRENCY = 64
CHUNK_ROWS = 5000  # rows per activity call: a retry redoes at most this much reading


@dataclass
class Slice:
    last_row_id: int
    rows: int  # staged rows read (0: none left)
    starts: list[JourneyStart] = field(default_factory=list)
    cancelled: bool = False


class EnrollmentActivities:
    def __init__(self, engine: Engine, journeys: Journeys) -> None:
        self.engine = engine
        self.journeys = journeys

    @activity.defn(name="enroll_batch_chunk")
    async def enroll_batch_chunk(self, input: ChunkInput) -> ChunkResult:
        try:
            return await self._chunk(input)
        except asyncio.CancelledError:
            if activity.is_worker_shutdown():  # fail now: another worker retries at once,
                raise ApplicationError("worker shut down mid-chunk") from None  # not in 60 s
            raise

    async def _chunk(self, input: ChunkInput) -> ChunkResult:
        cursor = input.after_row_id
        if activity.info().heartbeat_details:  # a retry: resume after the last slice done
            cursor = max(cursor, int(activity.info().heartbeat_details[0]))
        ahead = asyncio.create_task(self._stage(input.batch_id, cursor))
        read = 0
        try:
            while True:
                current = await ahead
                if current.cancelled or current.rows == 0:
                    return ChunkResult(cursor, done=True)
                read += current.rows
                last = current.rows < SLICE_ROWS
                if not last and read < CHUNK_ROWS:
                    ahead = asyncio.create_task(self._stage(input.batch_id, current.last_row_id))
                started = await self.journeys.start(current.starts, START_CONCURRENCY)
                await asyncio.to_thread(mark_started, self.engine, input.batch_id, started)
                if len(started) < len(current.starts):
                    raise ApplicationError(
                        f"{len(current.starts) - len(started)} journeys could not start yet"
                    )
                cursor = current.last_row_id
                activity.heartbeat(cursor)
                if last or read >= CHUNK_ROWS:
                    return ChunkResult(cursor, done=last)
        finally:
            if not ahead.done():  # a slice being written commits or not; either way it is safe
                await asyncio.wait([ahead])

    async def _stage(self, batch_id: int, after_row_id: int) -> Slice:
        return await asyncio.to_thread(stage_slice, self.engine, batch_id, after_row_id)

    @activity.defn(name="finish_enrollment_batch")
    def finish_enrollment_batch(self, batch_id: int) -> None:
        """Record the end, and drop the staged rows nobody needs any more (rejected ones stay,
        with their reasons, for the progress report)."""
        with session_scope(self.engine) as session:
            batch = session.get(EnrollmentBatch, batch_id)
            if batch is None:
                return
            session.execute(
                delete(EnrollmentBatchRow).where(
                    col(EnrollmentBatchRow.batch_id) == batch_id,
                    col(EnrollmentBatchRow.state).in_([RowState.STARTED, RowState.DUPLICATE]),
                )
            )
            if batch.status != BatchStatus.CANCELLED:
                batch.status = BatchStatus.COMPLETED
            batch.finished_at = batch.finished_at or utcnow()
            batch.updated_at = utcnow()
            session.add(batch)


def stage_slice(engine: Engine, batch_id: int, after_row_id: int) -> Slice:
    """Decide the next slice of staged rows (enrolled, duplicate or rejected) and return the
    journeys to start: those enrolled now and those a failed earlier attempt left unstarted."""
    with session_scope(engine) as session:
        batch = session.get(EnrollmentBatch, batch_id)
        if batch is None:
            raise ApplicationError(f"batch {batch_id} is gone", non_retryable=True)
        campaign = session.get(Campaign, batch.campaign_id)
        if campaign is None or campaign.status == CampaignStatus.ARCHIVED:
            batch.status = BatchStatus.CANCELLED
            batch.status_reason = f"campaign {batch.campaign_id} was archived"
            session.add(batch)
            return Slice(after_row_id, 0, cancelled=True)
        rows = session.exec(
            select(EnrollmentBatchRow)
            .where(
                EnrollmentBatchRow.batch_id == batch_id,
                col(EnrollmentBatchRow.id) > after_row_id,
            )
            .order_by(col(EnrollmentBatchRow.id))
            .limit(SLICE_ROWS)
        ).all()
        if not rows:
            return Slice(after_row_id, 0)
        counts = _decide(session, batch, [r for r in rows if r.state == RowState.PENDING])
        session.execute(
            update(EnrollmentBatch)
            .where(col(EnrollmentBatch.id) == batch_id)
            .values(
                status=BatchStatus.RUNNING,
                enrolled=EnrollmentBatch.enrolled + counts[RowState.ENROLLED],
                duplicates=EnrollmentBatch.duplicates + counts[RowState.DUPLICATE],
                rejected=EnrollmentBatch.rejected + counts[RowState.REJECTED],
                updated_at=utcnow(),
            )
        )
        bump(session, batch.campaign_id, CAMPAIGN, Metric.RECIPIENTS, counts[RowState.ENROLLED])
        to_start = [r.enrollment_id for r in rows if r.state == RowState.ENROLLED]
        enrollments = session.exec(select(Enrollment).where(col(Enrollment.id).in_(to_start)))
        plan = read_plan(session, batch.campaign_id) if to_start else None
        starts = [
            JourneyStart(e.id or 0, e.campaign_id, e.email, e.workflow_id, plan)
            for e in enrollments
        ]
        return Slice(rows[-1].id or 0, len(rows), starts)


def _decide(
    session: Session, batch: EnrollmentBatch, pending: list[EnrollmentBatchRow]
) -> dict[str, int]:
    """Enroll the pending rows that may be; set every row's state. Returns counts by state."""
    counts = dict.fromkeys((RowState.ENROLLED, RowState.DUPLICATE, RowState.REJECTED), 0)
    wanted: dict[str, EnrollmentBatchRow] = {}
    for row in pending:
        try:
            email = normalise_email(row.email)
        except EmailNotValidError as exc:
            _set(row, RowState.REJECTED, f"invalid email: {exc}")
            continue
        if problem := field_problem(row.fields):
            _set(row, RowState.REJECTED, problem)
            continue
        first = wanted.setdefault(email, row)
        if first is not row:
            _set(row, RowState.DUPLICATE, f"same address as row {first.row}")
    for email, suppression in suppressed_among(session, wanted).items():
        _set(wanted.pop(email), RowState.REJECTED, f"suppressed: {suppression.reason}")
    inserted = _insert_enrollments(session, batch.campaign_id, wanted)
    for email, row in wanted.items():
        if email in inserted:
            _set(row, RowState.ENROLLED, None, inserted[email])
        else:
            _set(row, RowState.DUPLICATE, "already enrolled in this campaign")
    for row in pending:  # the session writes the rows' new states when it commits
        counts[row.state] += 1
    return counts


def _set(
    row: EnrollmentBatchRow, state: str, reason: str | None, enrollment_id: int | None = None
) -> None:
    row.state, row.reason, row.enrollment_id = state, reason, enrollment_id


def _insert_enrollments(
    session: Session, campaign_id: int, wanted: dict[str, EnrollmentBatchRow]
) -> dict[str, int]:
    """INSERT ... ON CONFLICT DO NOTHING; {email: enrollment id} of the rows inserted now."""
    if not wanted:
        return {}
    now = utcnow()
    values = [
        dict(
            campaign_id=campaign_id,
            email=email,
            fields=dict(row.fields),
            status="active",
            current_step=0,
            workflow_id=workflow_id(campaign_id, email),
            workflow_started=False,
            created_at=now,
        )
        for email, row in wanted.items()
    ]
    table = Enrollment.__table__  # type: ignore[attr-defined]
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(table).values(values).on_conflict_do_nothing().returning(table.c.email, table.c.id)
    )
    return {email: enrollment_id for email, enrollment_id in session.execute(statement)}


def mark_started(engine: Engine, batch_id: int, enrollment_ids: list[int]) -> None:
    if not enrollment_ids:
        return
    with session_scope(engine) as session:
        session.execute(
            update(Enrollment)
            .where(col(Enrollment.id).in_(enrollment_ids))
            .values(workflow_started=True)
        )
        moved = session.execute(
            update(EnrollmentBatchRow)
            .where(
                col(EnrollmentBatchRow.batch_id) == batch_id,
                col(EnrollmentBatchRow.enrollment_id).in_(enrollment_ids),
                col(EnrollmentBatchRow.state) == RowState.ENROLLED,
            )
            .values(state=RowState.STARTED)
        ).rowcount
        session.execute(
            update(EnrollmentBatch)
            .where(col(EnrollmentBatch.id) == batch_id)
            .values(started=EnrollmentBatch.started + moved, updated_at=utcnow())
        )
