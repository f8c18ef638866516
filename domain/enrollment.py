"""The enrollment batch job's boundary types. Stdlib only, so the workflow sandbox passes it
through cheaply."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# Batches run on their own queue: a big import never waits behind journeys' workflow tasks,
# and a deployment may give it workers of its own.
BATCH_TASK_QUEUE = "drip-enrollment-batches"


class BatchActivityName:
    """The batch job's activities, by their registered names (in every recorded history)."""

    ENROLL_CHUNK = "enroll_batch_chunk"
    FINISH = "finish_enrollment_batch"


def batch_workflow_id(batch_id: int, token: str) -> str:
    # The random token keeps ids apart when a database is recreated under the same Temporal.
    return f"drip-enrollment-batch-{batch_id}-{token}"


class BatchStatus(StrEnum):
    STAGING = "staging"  # rows being stored; nothing works on it until they all are
    ACCEPTED = "accepted"  # rows staged; the batch workflow is not started yet
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"  # the campaign was archived before every row was enrolled


class RowState(StrEnum):
    PENDING = "pending"
    ENROLLED = "enrolled"  # enrollment written, journey not started yet
    STARTED = "started"
    DUPLICATE = "duplicate"  # already enrolled in the campaign
    REJECTED = "rejected"


@dataclass
class BatchInput:
    batch_id: int
    after_row_id: int = 0  # rows up to this one are done: where a continued run resumes
    chunks_per_run: int = 200  # then continue as new, whatever the server suggests


@dataclass
class ChunkInput:
    batch_id: int
    after_row_id: int


@dataclass
class ChunkResult:
    last_row_id: int  # the last staged row this chunk finished
    done: bool  # no rows left after it (or the batch was cancelled)
