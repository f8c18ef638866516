"""Deliveries an operator looks at: those in one status (`uncertain` above all: maybe received,
held by DRIP_UNCERTAIN_SENDS=hold), with their recipient's address."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, func, select

from services.errors import NotFound
from storage.models import Delivery, Enrollment


@dataclass
class Listed:
    delivery: Delivery
    email: str | None  # None once the recipient is erased


def page(
    session: Session, status: str, campaign_id: int | None, limit: int, offset: int
) -> tuple[list[Listed], int]:
    """One page of the deliveries in `status`, oldest attempt first, and how many there are."""
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
    return [Listed(d, e) for d, e in rows], total


def one(session: Session, delivery_id: str) -> Listed:
    found = session.exec(
        select(Delivery, Enrollment.email)
        .join(Enrollment, col(Enrollment.id) == col(Delivery.enrollment_id), isouter=True)
        .where(col(Delivery.id) == delivery_id)
    ).first()
    if found is None:
        raise NotFound("delivery", delivery_id)
    return Listed(*found)
