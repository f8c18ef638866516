"""The enrollment batch job's activities: turn staged rows into enrollments and start their
journeys, a slice at a time (services/enrollment_batches.py), heartbeating after each. The next
slice is written while the current one's journeys start, so the server is kept busy with starts.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

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
# Rows per activity call: a retry redoes at most this much reading, and the pipeline of starts
# drains at each call's end.
CHUNK_ROWS = 20_000


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
        """Slices overlap: the next is written and its starts queue on the same gate while the
        current one's last starts are in flight and its rows are marked started, so the server
        always has START_CONCURRENCY starts to take, not a dip at every slice's tail."""
        cursor = input.after_row_id
        if activity.info().heartbeat_details:  # a retry: resume after the last slice done
            cursor = max(cursor, int(activity.info().heartbeat_details[0]))
        gate = asyncio.Semaphore(START_CONCURRENCY)  # shared by the slices in flight
        flying: collections.deque[tuple[Slice, asyncio.Task[None]]] = collections.deque()
        ahead: asyncio.Task[Slice] | None = asyncio.create_task(self._stage(input.batch_id, cursor))
        read, done = 0, False
        try:
            while ahead is not None or flying:
                if ahead is not None:
                    current = await ahead
                    ahead = None
                    if current.cancelled or current.rows == 0:
                        done = True
                    else:
                        read += current.rows
                        done = current.rows < SLICE_ROWS
                        task = asyncio.create_task(self._start(current, gate, input.batch_id))
                        flying.append((current, task))
                        if not done and read < CHUNK_ROWS:
                            ahead = asyncio.create_task(
                                self._stage(input.batch_id, current.last_row_id)
                            )
                # The oldest slice retires (heartbeat: the cursor a retry resumes after) once
                # the next is in flight behind it, or when nothing more comes.
                while flying and (len(flying) > 1 or ahead is None):
                    finished, task = flying.popleft()
                    await task
                    cursor = finished.last_row_id
                    activity.heartbeat(cursor)
            return ChunkResult(cursor, done=done)
        finally:  # a slice being written or started commits or not; either way it is safe
            pending: list[asyncio.Task[Any]] = [t for _, t in flying if not t.done()]
            if ahead is not None and not ahead.done():
                pending.append(ahead)
            if pending:
                await asyncio.wait(pending)

    async def _start(self, staged: Slice, gate: asyncio.Semaphore, batch_id: int) -> None:
        started = await self.journeys.start(staged.starts, gate=gate)
        await asyncio.to_thread(mark_started, self.engine, started, batch_id)
        if len(started) < len(staged.starts):
            raise ApplicationError(
                f"{len(staged.starts) - len(started)} journeys could not start yet"
            )

    async def _stage(self, batch_id: int, after_row_id: int) -> Slice:
        try:
            return await asyncio.to_thread(stage_slice, self.engine, batch_id, after_row_id)
        except LookupError as exc:
            raise ApplicationError(str(exc), non_retryable=True) from exc

    @activity.defn(name=BatchActivityName.FINISH)
    def finish_enrollment_batch(self, batch_id: int) -> None:
        enrollment_batches.finish(self.engine, batch_id)
