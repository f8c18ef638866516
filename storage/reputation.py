"""Guard the sender's reputation: a campaign whose hard-bounce or complaint rate crosses a limit
pauses itself, with the reason recorded, before mailbox providers start blocking the domain."""

from __future__ import annotations

import logging

from sqlalchemy import func
from sqlmodel import Session, col, select

from domain.journey import CampaignStatus, EventType
from domain.reputation import ReputationLimits
from storage.campaign_status import set_status
from storage.models import Campaign, Delivery, Event

log = logging.getLogger(__name__)

# Starts every reason the guard records, so its pauses can be told from an operator's.
AUTO_PAUSE = "paused automatically"

__all__ = ["AUTO_PAUSE", "ReputationLimits", "auto_paused_campaigns", "guard_campaign"]


def guard_campaign(session: Session, campaign_id: int, limits: ReputationLimits) -> str | None:
    """Pause the campaign if a rate is over its limit; return the reason when it did."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None or campaign.status != CampaignStatus.ACTIVE:
        return None
    sent = session.exec(
        select(func.count())
        .select_from(Delivery)
        .where(Delivery.campaign_id == campaign_id, col(Delivery.status).in_(["sent", "bounced"]))
    ).one()
    if sent < limits.min_sent:
        return None
    for kind, limit in (
        (EventType.COMPLAINT, limits.max_complaint_rate),
        (EventType.BOUNCE_HARD, limits.max_bounce_rate),
    ):
        affected = session.exec(
            select(func.count(func.distinct(Event.delivery_id))).where(
                Event.campaign_id == campaign_id, Event.type == kind
            )
        ).one()
        rate = affected / sent
        if rate >= limit:
            reason = (
                f"{AUTO_PAUSE}: {kind} rate {rate:.2%} reached the {limit:.2%} limit "
                f"({affected} of {sent} sent)"
            )
            set_status(session, campaign, CampaignStatus.PAUSED, reason)
            log.warning("campaign %s %s", campaign_id, reason)
            return reason
    return None


def auto_paused_campaigns(session: Session) -> int:
    """Campaigns the guard paused and nobody has resumed (observability/backlog.py)."""
    return session.exec(
        select(func.count())
        .select_from(Campaign)
        .where(
            Campaign.status == CampaignStatus.PAUSED,
            col(Campaign.status_reason).startswith(AUTO_PAUSE),
        )
    ).one()
