"""The one way a campaign's status is written: each change is counted (`status_version`), so
journeys can tell a newer status from an older one, and the outbox can tell which changes the
running journeys have not heard of yet (`broadcast_version`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from domain.journey import CampaignChange, CampaignStatus
from storage.db import session_scope
from storage.models import Campaign, utcnow


def set_status(
    session: Session, campaign: Campaign, status: CampaignStatus, reason: str | None = None
) -> None:
    """In the caller's transaction. The count is incremented in SQL: two concurrent changes
    never share a version."""
    session.flush()  # the caller's other changes to the row first: the refresh keeps them
    session.execute(
        update(Campaign)
        .where(col(Campaign.id) == campaign.id)
        .values(
            status=status,
            status_reason=reason,
            status_version=col(Campaign.status_version) + 1,
            updated_at=utcnow(),
        )
    )
    session.refresh(campaign)


def unbroadcast(engine: Engine, changed_before: datetime) -> list[tuple[int, CampaignChange]]:
    """Campaigns whose latest status change the running journeys may not have heard of."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(Campaign).where(
                col(Campaign.broadcast_version) < col(Campaign.status_version),
                col(Campaign.updated_at) < changed_before,
            )
        ).all()
        return [
            (c.id or 0, CampaignChange(CampaignStatus(c.status), c.status_version)) for c in rows
        ]


def mark_broadcast(engine: Engine, campaign_id: int, version: int) -> None:
    with session_scope(engine) as session:
        session.execute(
            update(Campaign)
            .where(col(Campaign.id) == campaign_id, col(Campaign.broadcast_version) < version)
            .values(broadcast_version=version)
        )
