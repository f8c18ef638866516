"""The enrollment batch workflow on the time-skipping server, with fake chunk activities under
the real names: it walks the rows chunk by chunk, continues as new with its cursor, retries a
failed chunk from where it was, and finishes once."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.enrollment import BatchInput, ChunkInput, ChunkResult
from workflows.enrollment_batch import EnrollmentBatchWorkflow


@dataclass
class FakeChunks:
    rows: int  # staged rows 1..rows, chunks of 10
    fail_once_at: int | None = None
    calls: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)

    @activity.defn(name="enroll_batch_chunk")
    async def enroll_batch_chunk(self, input: ChunkInput) -> ChunkResult:
        self.calls.append(input.after_row_id)
        if input.after_row_id == self.fail_once_at:
            self.fail_once_at = None
            raise RuntimeError("worker died")
        last = min(input.after_row_id + 10, self.rows)
        return ChunkResult(last_row_id=last, done=last == self.rows)

    @activity.defn(name="finish_enrollment_batch")
    async def finish_enrollment_batch(self, batch_id: int) -> None:
        self.finished.append(batch_id)


async def test_walks_every_chunk_across_continue_as_new_and_a_failure(
    time_env: WorkflowEnvironment,
) -> None:
    fakes = FakeChunks(rows=95, fail_once_at=40)
    queue = f"batch-{uuid.uuid4()}"
    async with Worker(
        time_env.client,
        task_queue=queue,
        workflows=[EnrollmentBatchWorkflow],
        activities=[fakes.enroll_batch_chunk, fakes.finish_enrollment_batch],
    ):
        handle = await time_env.client.start_workflow(
            EnrollmentBatchWorkflow.run,
            BatchInput(batch_id=7, chunks_per_run=3),
            id=f"batch-{uuid.uuid4()}",
            task_queue=queue,
        )
        assert await handle.result() == 7
    # Each chunk resumes after the last; the failed one is retried from the same place.
    assert fakes.calls == [0, 10, 20, 30, 40, 40, 50, 60, 70, 80, 90]
    assert fakes.finished == [7]
    # 10 chunks, 3 per run: four runs, each continuing as new into the next.
    run_id, runs = handle.first_execution_run_id, 0
    while run_id:
        runs += 1
        run = time_env.client.get_workflow_handle(handle.id, run_id=run_id)
        last = [e async for e in run.fetch_history_events()][-1]
        if last.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            assert (await run.describe()).status == WorkflowExecutionStatus.COMPLETED
            break
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    assert runs == 4
