"""The enrollment batch job's activities: turn staged rows into enrollments and start their
journeys, a slice at a time (services/enrollment_batches.py), heartbeating after each. The next
slice is written while the current one's journeys start, so the server is kept busy with starts.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.enrollment import BatchActivityName, ChunkInput, ChunkResult
from services import enrollment_batches
from services.enrollment import mark_started
from services.enrollment_batches import SLICE_ROWS, Slice, stage_slice
from services.journeys import Journeys

# Starts in flight. A batch wants throughput, not latency: the server takes starts fastest with
# many in flight (docs/performance.md, "Measurements behind the code").
START_CONCURRENCY = 64
CHUNK_ROWS = 5000  # rows per activity call: a retry redoes at most this much reading


class EnrollmentBatchActivities:
    def __init__(self, engine: Engine, journeys: Journeys) -> None:
        self.engine = engine
        self.journeys = journeys

    @activity.defn(name=BatchActivityName.ENROLL_CHUNK)
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
                await asyncio.to_thread(mark_started, self.engine, started, input.batch_id)
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
        try:
            return await asyncio.to_thread(stage_slice, self.engine, batch_id, after_row_id)
        except LookupError as exc:
            raise ApplicationError(str(exc), non_retryable=True) from exc

    @activity.defn(name=BatchActivityName.FINISH)
    def finish_enrollment_batch(self, batch_id: int) -> None:
        enrollment_batches.finish(self.engine, batch_id)
