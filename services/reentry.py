"""Re-entry: whether an address already in a campaign may enter it again, and as which entry.

By default an address enters a campaign at most once, ever. A campaign with
`reentry_allowed` takes it again once its latest journey there has ended and
`reentry_cooldown_hours` have passed since — never after an unsubscribe, complaint, hard bounce
or erasure. Each entry is its own enrollment row (unique per campaign, address and entry) and
its own journey (`domain.journey.workflow_id(campaign, email, entry)`)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from domain.journey import JourneyStatus
from storage.models import Campaign, Enrollment, utcnow
from storage.tracked_events import IN_CHUNK, as_utc

ALREADY_ENROLLED = "already enrolled in this campaign"
ERASED = "erased"  # the status_reason an erasure gives the journeys it ends (services/erasure.py)
# Ends after which an address never re-enters: it asked not to hear from us, or cannot.
FOR_GOOD = {JourneyStatus.UNSUBSCRIBED, JourneyStatus.BOUNCED, JourneyStatus.COMPLAINED}


def entries(
    session: Session, campaign_id: int, emails: Collection[str]
) -> tuple[dict[str, int], dict[str, str]]:
    """({email: the entry to write} for those entering again, {email: why not} for those who
    may not). Addresses in neither enter for the first time (entry 1) — or, in a campaign
    without re-entry, are found already enrolled when their row collides."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None or not campaign.reentry_allowed or not emails:
        return {}, {}
    previous: dict[str, list[Enrollment]] = {}
    addresses = list(emails)
    for start in range(0, len(addresses), IN_CHUNK):
        for row in session.exec(
            select(Enrollment).where(
                Enrollment.campaign_id == campaign_id,
                col(Enrollment.email).in_(addresses[start : start + IN_CHUNK]),
            )
        ):
            previous.setdefault(row.email, []).append(row)
    cooldown = timedelta(hours=campaign.reentry_cooldown_hours or 0)
    now = utcnow()
    again: dict[str, int] = {}
    refused: dict[str, str] = {}
    for email, rows in previous.items():
        reason = refusal(rows, cooldown, now)
        if reason is None:
            again[email] = max(r.entry for r in rows) + 1
        else:
            refused[email] = reason
    return again, refused


def refusal(rows: Sequence[Enrollment], cooldown: timedelta, now: datetime) -> str | None:
    """Why an address with these entries may not enter again now, or None."""
    if any(r.status in FOR_GOOD or r.status_reason == ERASED for r in rows):
        return f"{ALREADY_ENROLLED}: no re-entry after an unsubscribe, complaint, bounce or erasure"
    latest = max(rows, key=lambda r: r.entry)
    if latest.status == JourneyStatus.ACTIVE or latest.finished_at is None:
        return f"{ALREADY_ENROLLED}: entry {latest.entry} is still running"
    allowed_at = as_utc(latest.finished_at) + cooldown
    if allowed_at > now:
        return f"{ALREADY_ENROLLED}: re-entry allowed from {allowed_at.isoformat()}"
    return None
