"""Deliveries an operator must look at: `GET /api/deliveries?status=uncertain` lists the messages
whose attempt died past the point of no return (held by DRIP_UNCERTAIN_SENDS=hold: maybe
received, never sent twice), and `POST /api/deliveries/{id}/resend` sends one again."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from api.deps import JourneysDep, SessionDep
from api.errors import problems
from api.schemas import DeliveryPage, DeliveryPublic
from services import deliveries
from services.deliveries import Listed

router = APIRouter(prefix="/api/deliveries", tags=["deliveries"])

Status = Literal["uncertain", "failed", "sending", "handing_over", "sent", "bounced", "pending"]


def _public(listed: Listed) -> DeliveryPublic:
    d = listed.delivery
    return DeliveryPublic(
        id=d.id,
        campaign_id=d.campaign_id,
        step_id=d.step_id,
        step_order=d.step_order,
        email=listed.email,
        status=d.status,
        error=d.error,
        subject=d.subject,
        message_id=d.message_id,
        send_started_at=d.send_started_at,
        sent_at=d.sent_at,
    )


@router.get(
    "",
    operation_id="listDeliveries",
    summary="List deliveries in one status",
    response_model=DeliveryPage,
)
async def list_deliveries(
    session: SessionDep,
    status: Status = Query(...),
    campaign_id: int | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> DeliveryPage:
    """Deliveries in one status, oldest attempt first; `uncertain` is the one to watch."""
    rows, total = await run_in_threadpool(
        deliveries.page, session, status, campaign_id, limit, offset
    )
    return DeliveryPage(items=[_public(r) for r in rows], total=total, limit=limit, offset=offset)


@router.post(
    "/{delivery_id}/resend",
    operation_id="resendDelivery",
    summary="Send an uncertain delivery again",
    responses=problems(404, 409),
    response_model=DeliveryPublic,
)
async def resend_delivery(
    delivery_id: str, session: SessionDep, journeys: JourneysDep
) -> DeliveryPublic:
    """Send an `uncertain` delivery again, now (the operator accepts it may arrive twice).
    Answers with the delivery after the attempt: `sent`, `failed`, `bounced`, or `uncertain`
    still when the server could not take it now (try again later). 404 for an unknown id, 409
    for a delivery that is not uncertain or an address now suppressed."""
    await run_in_threadpool(deliveries.one, session, delivery_id)  # 404 before anything runs
    await journeys.resend(delivery_id)  # by the worker, through the send activity's protocol
    return _public(await run_in_threadpool(deliveries.one, session, delivery_id))
