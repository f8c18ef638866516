"""The checks made before any step is acted on, with the database as the source of truth."""

from __future__ import annotations

from sqlmodel import Session

from domain.journey import (
    SUPPRESSION_EXIT,
    CampaignStatus,
    JourneyStatus,
    StepOutcome,
    StepResult,
)
from storage.models import Campaign, Enrollment
from storage.suppression import find_suppression


def gate(session: Session, enrollment: Enrollment | None) -> StepResult | None:
    """None when the step may go ahead; otherwise the result that holds or ends the journey."""
    if enrollment is None:
        return StepResult(StepOutcome.ENDED, exit_status=JourneyStatus.REMOVED, reason="erased")
    if enrollment.status != JourneyStatus.ACTIVE:
        return StepResult(
            StepOutcome.ENDED,
            exit_status=JourneyStatus(enrollment.status),
            reason=enrollment.status_reason,
        )
    campaign = session.get(Campaign, enrollment.campaign_id)
    if campaign is None or campaign.status == CampaignStatus.ARCHIVED:
        return StepResult(
            StepOutcome.ENDED, exit_status=JourneyStatus.ARCHIVED, reason="campaign archived"
        )
    if campaign.status != CampaignStatus.ACTIVE:
        return StepResult(
            StepOutcome.HELD,
            reason=f"campaign {campaign.status}",
            status_version=campaign.status_version,
        )
    suppression = find_suppression(session, enrollment.email)  # plain or hashed (erased)
    if suppression is not None:
        status = SUPPRESSION_EXIT.get(suppression.reason, JourneyStatus.SUPPRESSED)
        return StepResult(
            StepOutcome.ENDED, exit_status=status, reason=f"suppressed: {suppression.reason}"
        )
    return None
