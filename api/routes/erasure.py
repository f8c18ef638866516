"""`DELETE /api/recipients/{email}`: the GDPR erasure path (services/erasure.py says what it
does and in which order). An address nothing is known about answers 200 with `found: false`:
erasure is idempotent."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import EngineDep, JourneysDep
from api.errors import problems
from api.schemas import ErasureSummary
from services import erasure

router = APIRouter(prefix="/api/recipients", tags=["erasure"])


# `:path`: an address may hold a "/" (RFC 5322 allows it), which a plain parameter refuses.
@router.delete(
    "/{email:path}",
    operation_id="eraseRecipient",
    summary="Erase a person from every campaign (GDPR)",
    responses=problems(503),
    response_model=ErasureSummary,
)
async def erase_recipient(
    email: Annotated[str, Path(min_length=1, max_length=320)],
    engine: EngineDep,
    journeys: JourneysDep,
) -> ErasureSummary:
    """Erase everything held about an address, in every campaign (GDPR right to erasure): end
    its journeys, delete their workflow histories from Temporal, and delete its enrollments,
    fields, deliveries and events. A suppression is kept as a hash of the address only."""
    return ErasureSummary(**asdict(await erasure.erase(engine, journeys, email)))
