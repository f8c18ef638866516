"""The suppression list over HTTP (services/suppressions.py)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from api.deps import EngineDep, JourneysDep, SessionDep
from api.errors import problems
from api.schemas import SuppressionCreate, SuppressionPage, SuppressionPublic
from services import suppressions
from storage.models import Suppression

router = APIRouter(prefix="/api/suppressions", tags=["suppressions"])


def _public(row: Suppression) -> SuppressionPublic:
    return SuppressionPublic(
        email=row.email, reason=row.reason, source=row.source, created_at=row.created_at
    )


@router.get(
    "",
    operation_id="listSuppressions",
    summary="List suppressed addresses",
    response_model=SuppressionPage,
)
def list_suppressions(
    session: SessionDep,
    email: str | None = None,
    reason: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> SuppressionPage:
    """Suppressed addresses, newest first; `email` and `reason` filter exactly. An erased
    person's entry is kept (and listed) only as `hmac-sha256:<hash>`; `email` finds it too."""
    rows, total = suppressions.page(session, email, reason, limit, offset)
    return SuppressionPage(
        items=[_public(r) for r in rows], total=total, limit=limit, offset=offset
    )


@router.post(
    "",
    operation_id="createSuppression",
    summary="Suppress an address",
    response_model=SuppressionPublic,
    status_code=201,
)
async def suppress(
    body: SuppressionCreate, response: Response, engine: EngineDep, journeys: JourneysDep
) -> SuppressionPublic:
    """Suppress an address (201; 200 with the existing entry when it is already suppressed) and
    end every running journey of it, in every campaign."""
    done = await suppressions.suppress(engine, journeys, body.email, body.reason)
    if not done.created:
        response.status_code = 200
    return _public(done.row)


@router.delete(
    "/{email}",
    operation_id="deleteSuppression",
    summary="Lift an address's suppression",
    responses=problems(404),
    status_code=204,
)
def unsuppress(email: str, session: SessionDep) -> Response:
    """Lift a suppression: sends to the address resume for journeys still running and new
    enrollments; journeys it already ended stay ended."""
    suppressions.lift(session, email)
    return Response(status_code=204)
