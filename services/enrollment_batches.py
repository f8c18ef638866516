"""Large enrollments: stage the rows durably and answer at once, then enroll them a slice at a
time through the one enrollment pipeline (services/enrollment.py).

The API stages what it was given and starts the batch workflow (workflows/enrollment_batch.py),
whose activity (activities/enrollment_batch.py) calls `stage_slice` and starts the journeys. A
batch whose workflow did not start (Temporal down, API killed just after the staging) is started
by the outbox (services/outbox.py).

Idempotent by the staged rows' states, which move in the same transaction as the enrollments
they write: a retried slice skips rows already decided and returns for (re)start only rows
enrolled but not yet started; a journey can never start twice (one workflow id per campaign
and address, REJECT_DUPLICATE)."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, Any

from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from domain.enrollment import (
    BatchInput,
    BatchStatus,
    RowState,
    batch_workflow_id,
)
from domain.journey import CampaignStatus
from observability.metrics import count_enrollments
from services.enrollment import Candidate, journey_starts
from services.enrollment import decide as decide_enrollments
from services.journeys import Journeys, JourneyStart
from storage.db import session_scope
from storage.models import Campaign, EnrollmentBatch, EnrollmentBatchRow, utcnow
from workflows.enrollment_batch import EnrollmentBatchWorkflow

log = logging.getLogger(__name__)

MAX_CSV_ROWS = 1_000_000
MAX_COLUMNS = 200
MAX_EMAIL_LENGTH = 320
MAX_FIELD_NAME_LENGTH = 100
STAGE_ROWS = 10_000  # staged rows per transaction: a short hold of the write lock each


class CsvRejected(ValueError):
    """The file as a whole cannot be imported (no header, no email column, not UTF-8...)."""


@dataclass
class StagedRow:
    row: int
    email: str
    fields: dict[str, Any]
    reason: str | None = None  # set: rejected already, while reading


def stage_batch(
    engine: Engine,
    campaign_id: int,
    source: str,
    rows: Iterable[StagedRow],
    filename: str | None = None,
) -> EnrollmentBatch:
    """Store the batch and its rows, all or nothing, in short transactions of STAGE_ROWS rows:
    a million-row import must not hold SQLite's one write lock for the whole file (18 s), with
    every send and event waiting behind it. The batch is `staging` until its last row is in, so
    nothing works on it before; a file refused halfway is deleted again."""
    with session_scope(engine) as session:
        batch = EnrollmentBatch(
            campaign_id=campaign_id, source=source, filename=filename, status=BatchStatus.STAGING
        )
        session.add(batch)
    batch_id = batch.id or 0
    accepted = rejected = 0
    try:
        chunk: list[tuple[Any, ...]] = []
        for staged in rows:  # read (and the next chunk built) outside any transaction
            accepted += 1
            rejected += staged.reason is not None
            chunk.append(_staged_values(batch_id, staged))
            if len(chunk) == STAGE_ROWS:
                _insert_staged(engine, chunk)
                chunk = []
        _insert_staged(engine, chunk)
    except BaseException:
        _discard(engine, batch_id)
        raise
    count_enrollments(enrolled=0, already_enrolled=0, rejected=rejected)  # refused on reading
    with session_scope(engine) as session:
        batch.accepted, batch.rejected = accepted, rejected
        batch.status, batch.updated_at = BatchStatus.ACCEPTED, utcnow()
        session.add(batch)
    return batch


def _staged_values(batch_id: int, staged: StagedRow) -> tuple[Any, ...]:
    return (
        batch_id,
        staged.row,
        staged.email[:MAX_EMAIL_LENGTH],
        json.dumps(staged.fields) if staged.fields else "{}",
        RowState.REJECTED if staged.reason else RowState.PENDING,
        staged.reason,
    )


def _insert_staged(engine: Engine, chunk: list[tuple[Any, ...]]) -> None:
    if not chunk:
        return
    with session_scope(engine) as session:
        connection = session.connection()
        # Straight to the driver's executemany: the fastest way in (docs/performance.md).
        mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
        statement = (
            'INSERT INTO enrollment_batch_row (batch_id, "row", email, fields, state, reason) '
            f"VALUES ({', '.join([mark] * 6)})"
        )
        connection.exec_driver_sql(statement, chunk)


# A stage of the largest file takes well under a minute: one still `staging` after this was
# abandoned (its API process died mid-upload, and the client was never answered).
ABANDONED_STAGING = timedelta(hours=1)


def discard_abandoned(engine: Engine) -> int:
    """Delete batches whose staging never finished; how many."""
    with session_scope(engine) as session:
        abandoned = session.exec(
            select(EnrollmentBatch).where(
                EnrollmentBatch.status == BatchStatus.STAGING,
                col(EnrollmentBatch.created_at) < utcnow() - ABANDONED_STAGING,
            )
        ).all()
    for batch in abandoned:
        _discard(engine, batch.id or 0)
    return len(abandoned)


def _discard(engine: Engine, batch_id: int) -> None:
    with session_scope(engine) as session:
        session.execute(
            delete(EnrollmentBatchRow).where(col(EnrollmentBatchRow.batch_id) == batch_id)
        )
        session.execute(delete(EnrollmentBatch).where(col(EnrollmentBatch.id) == batch_id))


def json_rows(recipients: Iterable[Candidate]) -> Iterator[StagedRow]:
    for index, recipient in enumerate(recipients):
        yield StagedRow(index, recipient.email, dict(recipient.fields))


def csv_rows(binary: IO[bytes]) -> Iterator[StagedRow]:
    """Read a CSV upload row by row (never all of it in memory). Raises CsvRejected for a
    problem with the whole file; a bad row is yielded with its reason, to be reported."""
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader, None)
        if header is None:
            raise CsvRejected("the file is empty: it needs a header row with an `email` column")
        names = [name.strip() for name in header]
        email_at = _check_header(names)
        count = 0
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue  # blank line
            count += 1
            if count > MAX_CSV_ROWS:
                raise CsvRejected(f"more than {MAX_CSV_ROWS:,} rows: split the file")
            yield _csv_row(reader.line_num, record, names, email_at)
    except UnicodeDecodeError as exc:
        raise CsvRejected(f"line {reader.line_num + 1}: not UTF-8 text ({exc.reason})") from exc
    except csv.Error as exc:
        raise CsvRejected(f"line {reader.line_num}: {exc}") from exc


def _check_header(names: list[str]) -> int:
    lowered = [name.lower() for name in names]
    if "email" not in lowered:
        raise CsvRejected("the header row has no `email` column")
    if len(names) > MAX_COLUMNS:
        raise CsvRejected(f"{len(names)} columns: at most {MAX_COLUMNS}")
    seen: set[str] = set()
    for name in lowered:
        if name and name in seen:
            raise CsvRejected(f"column {name!r} appears twice in the header row")
        seen.add(name)
        if len(name) > MAX_FIELD_NAME_LENGTH:
            raise CsvRejected(f"column name {name[:20]!r}... is over 100 characters")
    return lowered.index("email")


def _csv_row(line: int, record: list[str], names: list[str], email_at: int) -> StagedRow:
    email = record[email_at].strip() if email_at < len(record) else ""
    fields = {
        name: value
        for at, (name, value) in enumerate(zip(names, record, strict=False))
        if at != email_at and name and value != ""  # empty cell: the template's default applies
    }
    reason = None
    if len(record) > len(names):
        reason = f"{len(record)} values but the header has {len(names)} columns"
    elif not email:
        reason = "no email address"
    elif len(email) > MAX_EMAIL_LENGTH:
        reason = f"email address longer than {MAX_EMAIL_LENGTH} characters"
    return StagedRow(line, email, fields if reason is None else {}, reason)


async def start_batch(journeys: Journeys, engine: Engine, batch_id: int, token: str) -> bool:
    """Start the batch's workflow (once, ever); True when Temporal has it."""
    try:
        await journeys.client.start_workflow(
            EnrollmentBatchWorkflow.run,
            BatchInput(batch_id),
            id=batch_workflow_id(batch_id, token),
            task_queue=journeys.batch_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        pass
    except RPCError as exc:
        log.warning("could not start batch %s yet (%s); the outbox retries", batch_id, exc)
        return False
    await run_in_threadpool(_mark_running, engine, batch_id)
    return True


def _mark_running(engine: Engine, batch_id: int) -> None:
    with session_scope(engine) as session:
        session.execute(
            update(EnrollmentBatch)
            .where(
                col(EnrollmentBatch.id) == batch_id,
                col(EnrollmentBatch.status) == BatchStatus.ACCEPTED,
            )
            .values(status=BatchStatus.RUNNING, updated_at=utcnow())
        )


def unstarted_batches(engine: Engine, created_before: datetime) -> list[tuple[int, str]]:
    with session_scope(engine) as session:
        batches = session.exec(
            select(EnrollmentBatch).where(
                EnrollmentBatch.status == BatchStatus.ACCEPTED,
                col(EnrollmentBatch.created_at) < created_before,
            )
        )
        return [(b.id or 0, b.token) for b in batches]


def rejected_rows(
    session: Session, batch_id: int, limit: int, offset: int
) -> list[EnrollmentBatchRow]:
    return list(
        session.exec(
            select(EnrollmentBatchRow)
            .where(
                EnrollmentBatchRow.batch_id == batch_id,
                EnrollmentBatchRow.state == RowState.REJECTED,
            )
            .order_by(col(EnrollmentBatchRow.id))
            .limit(limit)
            .offset(offset)
        )
    )


@dataclass
class Accepted:
    batch_id: int
    campaign_id: int
    accepted: int
    rejected: int  # rows refused while reading (e.g. no email); invalid addresses come later
    status: BatchStatus


async def accept(
    engine: Engine,
    journeys: Journeys,
    campaign_id: int,
    source: str,
    rows: Iterable[StagedRow],
    filename: str | None = None,
) -> Accepted:
    """Stage the rows (all or nothing), then start the batch workflow."""
    batch = await run_in_threadpool(stage_batch, engine, campaign_id, source, rows, filename)
    batch_id = batch.id or 0
    started = await start_batch(journeys, engine, batch_id, batch.token)
    return Accepted(
        batch_id=batch_id,
        campaign_id=campaign_id,
        accepted=batch.accepted,
        rejected=batch.rejected,
        status=BatchStatus.RUNNING if started else BatchStatus.ACCEPTED,
    )


# --- the batch job's slices ------------------------------------------------------------------

SLICE_ROWS = 250  # rows written, then started, per step (and per heartbeat)


@dataclass
class Slice:
    last_row_id: int
    rows: int  # staged rows read (0: none left)
    starts: list[JourneyStart] = field(default_factory=list)
    cancelled: bool = False


def stage_slice(engine: Engine, batch_id: int, after_row_id: int) -> Slice:
    """Decide the next slice of staged rows (enrolled, duplicate or rejected) and return the
    journeys to start: those enrolled now and those a failed earlier attempt left unstarted."""
    with session_scope(engine) as session:
        batch = session.get(EnrollmentBatch, batch_id)
        if batch is None:
            raise LookupError(f"batch {batch_id} is gone")
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
        to_start = [r.enrollment_id for r in rows if r.state == RowState.ENROLLED]
        starts = journey_starts(session, batch.campaign_id, [i for i in to_start if i])
        return Slice(rows[-1].id or 0, len(rows), starts)


def _decide(
    session: Session, batch: EnrollmentBatch, pending: list[EnrollmentBatchRow]
) -> dict[RowState, int]:
    """Enroll the pending rows that may be; set every row's state. Returns counts by state.
    The session writes the rows' new states when it commits."""
    verdicts = decide_enrollments(
        session, batch.campaign_id, [Candidate(r.email, r.fields) for r in pending]
    )
    counts = dict.fromkeys((RowState.ENROLLED, RowState.DUPLICATE, RowState.REJECTED), 0)
    for row, verdict in zip(pending, verdicts, strict=True):
        reason = verdict.reason
        if verdict.same_as is not None:
            reason = f"same address as row {pending[verdict.same_as].row}"
        row.state, row.reason, row.enrollment_id = verdict.state, reason, verdict.enrollment_id
        counts[verdict.state] += 1
    return counts


def finish(engine: Engine, batch_id: int) -> None:
    """Record the end, and drop the staged rows nobody needs any more (rejected ones stay,
    with their reasons, for the progress report)."""
    with session_scope(engine) as session:
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
