"""Staging a large batch holds the database's write lock a chunk at a time, never for the whole
file: another writer gets in while the rows are still being read. And staging is still all or
nothing: a file refused halfway leaves no batch behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import select

from domain.enrollment import BatchStatus
from services.enrollment_batches import (
    ABANDONED_STAGING,
    STAGE_ROWS,
    CsvRejected,
    StagedRow,
    discard_abandoned,
    stage_batch,
)
from storage.db import session_scope
from storage.models import Campaign, EnrollmentBatch, EnrollmentBatchRow, utcnow


def a_campaign(engine: Engine) -> int:
    with session_scope(engine) as session:
        campaign = Campaign(name="c", status="active")
        session.add(campaign)
        session.flush()
        return campaign.id or 0


def write_elsewhere(engine: Engine, done: threading.Event) -> None:
    with session_scope(engine) as session:
        session.add(Campaign(name="written while staging"))
    done.set()


def test_another_writer_gets_in_while_a_batch_is_staged(engine: Engine) -> None:
    campaign_id = a_campaign(engine)
    total = 3 * STAGE_ROWS
    other_done = threading.Event()
    waited: list[bool] = []

    def rows() -> Iterator[StagedRow]:
        for n in range(total):
            if n == STAGE_ROWS + 1:  # a chunk is in; the staging is a third of the way through
                threading.Thread(target=write_elsewhere, args=(engine, other_done)).start()
                waited.append(other_done.wait(timeout=5))
            yield StagedRow(n, f"r{n}@example.com", {})

    batch = stage_batch(engine, campaign_id, "csv", rows())
    other_done.wait(timeout=60)
    # Once, one transaction held the lock from the first row to the last: the other writer
    # waited until the whole stage had committed.
    assert waited == [True], "the other writer was blocked while the batch was being staged"
    assert batch.accepted == total and batch.status == BatchStatus.ACCEPTED
    with session_scope(engine) as session:
        count = select(func.count()).where(EnrollmentBatchRow.batch_id == batch.id)
        assert session.exec(count).one() == total


def test_a_file_refused_halfway_leaves_nothing(engine: Engine) -> None:
    campaign_id = a_campaign(engine)

    def rows() -> Iterator[StagedRow]:
        for n in range(STAGE_ROWS + 10):
            yield StagedRow(n, f"r{n}@example.com", {})
        raise CsvRejected("line 10012: not UTF-8 text")

    with pytest.raises(CsvRejected):
        stage_batch(engine, campaign_id, "csv", rows())
    with session_scope(engine) as session:
        assert session.exec(select(func.count()).select_from(EnrollmentBatch)).one() == 0
        assert session.exec(select(func.count()).select_from(EnrollmentBatchRow)).one() == 0


def test_a_staging_abandoned_midway_is_discarded_later(engine: Engine) -> None:
    """An API process that died mid-upload leaves a batch `staging`, never started and never
    answered: the outbox deletes it once it is clearly abandoned, and only then."""
    campaign_id = a_campaign(engine)
    with session_scope(engine) as session:
        fresh = EnrollmentBatch(campaign_id=campaign_id, source="csv", status=BatchStatus.STAGING)
        old = EnrollmentBatch(
            campaign_id=campaign_id,
            source="csv",
            status=BatchStatus.STAGING,
            created_at=utcnow() - ABANDONED_STAGING - timedelta(minutes=1),
        )
        session.add_all([fresh, old])
        session.flush()
        session.add(EnrollmentBatchRow(batch_id=old.id or 0, row=1, email="a@example.com"))
    assert discard_abandoned(engine) == 1
    with session_scope(engine) as session:
        assert [b.id for b in session.exec(select(EnrollmentBatch))] == [fresh.id]
        assert session.exec(select(func.count()).select_from(EnrollmentBatchRow)).one() == 0
