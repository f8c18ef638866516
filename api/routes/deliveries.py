"""Deliveries an operator must look at: `GET /api/deliveries?status=uncertain` lists the messages
whose attempt died past the point of no return (held by DRIP_UNCERTAIN_SENDS=hold: maybe
received, never sent twice), and `POST /api/deliveries/{id}/resend` sends one again."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from activities.sending import SendingActivities
from api.deps import EngineDep, SessionDep, SettingsDep
from api.schemas import DeliveryPage, DeliveryPublic
from mail.transport import build_transport
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


@router.get("", response_model=DeliveryPage)
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


@router.post("/{delivery_id}/resend", response_model=DeliveryPublic)
async def resend_delivery(
    delivery_id: str, session: SessionDep, engine: EngineDep, settings: SettingsDep
) -> DeliveryPublic:
    """Send an `uncertain` delivery again, now (the operator accepts it may arrive twice).
    Answers with the delivery after the attempt: `sent`, `failed`, `bounced`, or `uncertain`
    still when the server could not take it now (try again later). 404 for an unknown id, 409
    for a delivery that is not uncertain or an address now suppressed."""
    transport = build_transport(
        settings.smtp_url, settings.outbox_dir, settings.smtp_timeout_seconds
    )
    # The send activity's own protocol (lease, point of no return, record), outside Temporal.
    sender = SendingActivities(settings, engine, transport)
    try:
        await sender.resend(delivery_id)
    finally:
        sender.close()
    return _public(await run_in_threadpool(deliveries.one, session, delivery_id))
