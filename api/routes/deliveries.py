"""Deliveries an operator must look at: `GET /api/deliveries?status=uncertain` lists the messages
whose attempt died past the point of no return (held by DRIP_UNCERTAIN_SENDS=hold: maybe
received, never sent twice), and `POST /api/deliveries/{id}/resend` sends one again."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, Query
from sqlmodel import Session, col, func, select
from starlette.concurrency import run_in_threadpool

from activities.sending import NotResendable, SendingActivities
from api.deps import EngineDep, SessionDep, SettingsDep
from api.errors import conflict, not_found
from api.schemas import DeliveryPage, DeliveryPublic
from mail.transport import build_transport
from storage.models import Delivery, Enrollment

router = APIRouter(prefix="/api/deliveries", tags=["deliveries"])

Listed = Literal["uncertain", "failed", "sending", "handing_over", "sent", "bounced", "pending"]


def _public(delivery: Delivery, email: str | None) -> DeliveryPublic:
    return DeliveryPublic(
        id=delivery.id,
        campaign_id=delivery.campaign_id,
        step_id=delivery.step_id,
        step_order=delivery.step_order,
        email=email,
        status=delivery.status,
        error=delivery.error,
        subject=delivery.subject,
        message_id=delivery.message_id,
        send_started_at=delivery.send_started_at,
        sent_at=delivery.sent_at,
    )


def _page(
    session: Session, status: str, campaign_id: int | None, limit: int, offset: int
) -> DeliveryPage:
    where = [col(Delivery.status) == status]
    if campaign_id is not None:
        where.append(col(Delivery.campaign_id) == campaign_id)
    total = session.exec(select(func.count()).select_from(Delivery).where(*where)).one()
    rows = session.exec(
        select(Delivery, Enrollment.email)
        .join(Enrollment, col(Enrollment.id) == col(Delivery.enrollment_id), isouter=True)
        .where(*where)
        .order_by(col(Delivery.send_started_at), col(Delivery.id))
        .limit(limit)
        .offset(offset)
    ).all()
    return DeliveryPage(
        items=[_public(d, e) for d, e in rows], total=total, limit=limit, offset=offset
    )


@router.get("", response_model=DeliveryPage)
async def list_deliveries(
    session: SessionDep,
    status: Listed = Query(...),
    campaign_id: int | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> DeliveryPage:
    """Deliveries in one status, oldest attempt first; `uncertain` is the one to watch."""
    return await run_in_threadpool(_page, session, status, campaign_id, limit, offset)


@router.post("/{delivery_id}/resend", response_model=DeliveryPublic)
async def resend_delivery(
    delivery_id: str, session: SessionDep, engine: EngineDep, settings: SettingsDep
) -> DeliveryPublic:
    """Send an `uncertain` delivery again, now (the operator accepts it may arrive twice).
    Answers with the delivery after the attempt: `sent`, `failed`, `bounced`, or `uncertain`
    still when the server could not take it now (try again later)."""
    transport = build_transport(
        settings.smtp_url, settings.outbox_dir, settings.smtp_timeout_seconds
    )
    sender = SendingActivities(settings, engine, transport)
    try:
        await sender.resend(delivery_id)
    except LookupError as exc:
        raise not_found("delivery", delivery_id) from exc
    except NotResendable as exc:
        raise conflict(str(exc)) from exc
    finally:
        sender.close()
    row = await run_in_threadpool(_one, session, delivery_id)
    if row is None:
        raise HTTPException(404, f"delivery {delivery_id} not found")
    return row


def _one(session: Session, delivery_id: str) -> DeliveryPublic | None:
    found = session.exec(
        select(Delivery, Enrollment.email)
        .join(Enrollment, col(Enrollment.id) == col(Delivery.enrollment_id), isouter=True)
        .where(col(Delivery.id) == delivery_id)
    ).first()
    return _public(*found) if found else None
