"""Large enrollments: a CSV import, and the progress of any batch (CSV or a large JSON call)."""

from __future__ import annotations

from fastapi import APIRouter, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from api.deps import EngineDep, JourneysDep, SessionDep, load_or_404
from api.errors import invalid, not_found, problems
from api.schemas import BatchAccepted, BatchProgress, batch_accepted, batch_progress
from services.enrollment import require_active
from services.enrollment_batches import CsvRejected, accept, csv_rows, rejected_rows
from storage.models import EnrollmentBatch

router = APIRouter(tags=["recipients"])


@router.post(
    "/api/campaigns/{campaign_id}/recipients/import",
    operation_id="importRecipients",
    summary="Enroll recipients from a CSV file",
    status_code=202,
    response_model=BatchAccepted,
    # The size limit (DRIP_MAX_UPLOAD_BYTES) is enforced while the upload streams (api/main.py).
    responses={
        **problems(404, 409),
        413: {"description": "upload larger than DRIP_MAX_UPLOAD_BYTES (512 MiB)"},
    },
)
async def import_recipients(
    campaign_id: int,
    file: UploadFile,
    session: SessionDep,
    engine: EngineDep,
    journeys: JourneysDep,
) -> BatchAccepted:
    """Enroll the recipients of a CSV file (multipart field `file`, UTF-8): a header row with
    an `email` column, any other columns become the recipient's fields (an empty cell leaves
    the field out). Up to 1,000,000 rows. The rows are stored before the answer; a batch job
    then enrolls them and starts their journeys: follow `progress_url`. Rows that cannot be
    enrolled (no or invalid address, suppressed, too many values) are reported there, with
    their line numbers; addresses already enrolled count as duplicates, never twice."""
    campaign = await run_in_threadpool(load_or_404, session, campaign_id)
    require_active(campaign)
    try:
        batch = await accept(
            engine, journeys, campaign_id, "csv", csv_rows(file.file), file.filename
        )
        return batch_accepted(batch)
    except CsvRejected as exc:
        raise invalid(["body", "file"], str(exc)) from exc
    finally:
        await file.close()


@router.get(
    "/api/enrollment-batches/{batch_id}",
    operation_id="getEnrollmentBatch",
    summary="Read an enrollment batch's progress",
    responses=problems(404),
    response_model=BatchProgress,
)
def get_batch(
    batch_id: int,
    session: SessionDep,
    rejected_limit: int = Query(100, ge=0, le=1000, description="rejected rows to list"),
    rejected_offset: int = Query(0, ge=0),
) -> BatchProgress:
    """Where a batch stands: how many rows were accepted, enrolled, started, were already
    enrolled (duplicates) or rejected, and the rejected rows with their reasons (paginated)."""
    batch = session.get(EnrollmentBatch, batch_id)
    if batch is None:
        raise not_found("enrollment batch", batch_id)
    rejected = rejected_rows(session, batch_id, rejected_limit, rejected_offset)
    return batch_progress(batch, rejected, rejected_limit, rejected_offset)
