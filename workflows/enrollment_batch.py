"""One large enrollment: walk its staged rows chunk by chunk until every journey is started.

All the work is in the `enroll_batch_chunk` activity, which is idempotent by the rows' states:
after a crash, a retried chunk (or a replayed run) redoes nothing already done. The run carries
only a cursor, and continues as new before its history grows long, so a million-row import
stays a short history.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from domain.enrollment import BatchActivityName, BatchInput, ChunkInput, ChunkResult

# A chunk starts up to a few thousand journeys; heartbeats after every slice of it show it
# alive, so a worker that died mid-chunk is noticed within HEARTBEAT_TIMEOUT.
CHUNK_TIMEOUT = timedelta(minutes=30)
HEARTBEAT_TIMEOUT = timedelta(seconds=60)
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))


@workflow.defn
class EnrollmentBatchWorkflow:
    @workflow.run
    async def run(self, input: BatchInput) -> int:
        cursor = input.after_row_id
        for _ in range(input.chunks_per_run):
            result: ChunkResult = await workflow.execute_activity(
                BatchActivityName.ENROLL_CHUNK,
                ChunkInput(input.batch_id, cursor),
                result_type=ChunkResult,
                start_to_close_timeout=CHUNK_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=RETRY,
            )
            cursor = result.last_row_id
            if result.done:
                await workflow.execute_activity(
                    BatchActivityName.FINISH,
                    input.batch_id,
                    start_to_close_timeout=CHUNK_TIMEOUT,
                    retry_policy=RETRY,
                )
                return input.batch_id
            if workflow.info().is_continue_as_new_suggested():
                break
        workflow.continue_as_new(BatchInput(input.batch_id, cursor, input.chunks_per_run))
