"""Large enrollments: stage the rows durably, start the batch workflow, report its progress.

The API's part is only to store what it was given, in one transaction, and answer at once; the
batch workflow (workflows/enrollment_batch.py) enrolls and starts journeys from the staged rows.
A batch whose workflow did not start (Temporal down, API killed just after the commit) is
started by the outbox (api/outbox.py)."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from api.schemas import BatchAccepted, BatchProgress, RecipientIn, RejectedRow
from domain.enrollment import (
    BATCH_TASK_QUEUE,
    BatchInput,
    BatchStatus,
    RowState,
    batch_workflow_id,
)
from storage.db import session_scope
from storage.models import EnrollmentBatch, EnrollmentBatchRow, utcnow
from workflows.enrollment_batch import EnrollmentBatchWorkflow

log = logging.getLogger(__name__)

MAX_CSV_ROWS = 1_000_000
MAX_COLUMNS = 200
MAX_EMAIL_LENGTH = 320
MAX_FIELD_NAME_LENGTH = 100
INSERT_ROWS = 1000  # staged rows per INSERT statement


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
    """Store the batch and all its rows in one transaction: all or nothing."""
    with session_scope(engine) as session:
        batch = EnrollmentBatch(campaign_id=campaign_id, source=source, filename=filename)
        session.add(batch)
        session.flush()
        connection = session.connection()
        # Straight to the driver's executemany: a million rows in seconds, not minutes.
        mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
        statement = (
            'INSERT INTO enrollment_batch_row (batch_id, "row", email, fields, state, reason) '
            f"VALUES ({', '.join([mark] * 6)})"
        )
        batch_id, accepted, rejected = batch.id, 0, 0
        chunk: list[tuple[Any, ...]] = []
        for staged in rows:
            accepted += 1
            rejected += staged.reason is not None
            chunk.append(
                (
                    batch_id,
                    staged.row,
                    staged.email[:MAX_EMAIL_LENGTH],
                    json.dumps(staged.fields) if staged.fields else "{}",
                    RowState.REJECTED if staged.reason else RowState.PENDING,
                    staged.reason,
                )
            )
            if len(chunk) == INSERT_ROWS:
                connection.exec_driver_sql(statement, chunk)
                chunk = []
        if chunk:
            connection.exec_driver_sql(statement, chunk)
        batch.accepted, batch.rejected = accepted, rejected
        session.add(batch)
    return batch


def json_rows(recipients: list[RecipientIn]) -> Iterator[StagedRow]:
    for index, recipient in enumerate(recipients):
        yield StagedRow(index, recipient.email, dict(recipient.fields))


def csv_rows(binary: IO[bytes]) -> Iterator[StagedRow]:
    """Read a CSV upload row by row (never all of it in memory). Raises CsvRejected for a
    problem with the whole file; a bad row is yielded with its reason, to be reported."""
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")  # type: ignore[type-var]
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


async def start_batch(client: Client, engine: Engine, batch_id: int, token: str) -> bool:
    """Start the batch's workflow (once, ever); True when Temporal has it."""
    try:
        await client.start_workflow(
            EnrollmentBatchWorkflow.run,
            BatchInput(batch_id),
            id=batch_workflow_id(batch_id, token),
            task_queue=BATCH_TASK_QUEUE,
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
        return list(
            session.exec(
                select(EnrollmentBatch.id, EnrollmentBatch.token).where(
                    EnrollmentBatch.status == BatchStatus.ACCEPTED,
                    col(EnrollmentBatch.created_at) < created_before,
                )
            )
        )


def progress(session: Session, batch: EnrollmentBatch, limit: int, offset: int) -> BatchProgress:
    rejected = session.exec(
        select(EnrollmentBatchRow)
        .where(
            EnrollmentBatchRow.batch_id == batch.id,
            EnrollmentBatchRow.state == RowState.REJECTED,
        )
        .order_by(col(EnrollmentBatchRow.id))
        .limit(limit)
        .offset(offset)
    ).all()
    return BatchProgress(
        id=batch.id or 0,
        campaign_id=batch.campaign_id,
        source=batch.source,
        filename=batch.filename,
        status=batch.status,
        status_reason=batch.status_reason,
        accepted=batch.accepted,
        processed=batch.enrolled + batch.duplicates + batch.rejected,
        enrolled=batch.enrolled,
        started=batch.started,
        duplicates=batch.duplicates,
        rejected=batch.rejected,
        rejected_rows=[
            RejectedRow(row=r.row, email=r.email, reason=r.reason or "") for r in rejected
        ],
        rejected_limit=limit,
        rejected_offset=offset,
        created_at=batch.created_at,
        updated_at=batch.updated_at,
        finished_at=batch.finished_at,
    )


async def accept(
    engine: Engine,
    client: Client,
    campaign_id: int,
    source: str,
    rows: Iterable[StagedRow],
    filename: str | None = None,
) -> BatchAccepted:
    """Stage the rows (all or nothing), then start the batch workflow."""
    batch = await run_in_threadpool(stage_batch, engine, campaign_id, source, rows, filename)
    batch_id = batch.id or 0
    started = await start_batch(client, engine, batch_id, batch.token)
    return BatchAccepted(
        batch_id=batch_id,
        campaign_id=campaign_id,
        accepted=batch.accepted,
        rejected=batch.rejected,
        status=BatchStatus.RUNNING if started else BatchStatus.ACCEPTED,
        progress_url=f"/api/enrollment-batches/{batch_id}",
    )
