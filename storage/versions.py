"""Version snapshots (services/versions.py): a campaign's definition as a version keeps it,
so journeys still on that version send what it defined."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from domain.versions import VersionChange, VersionPolicy, VersionStatus
from storage.db import session_scope
from storage.models import Campaign, CampaignVersion, Enrollment, Step

# A version's campaign-wide part: the journey definition and the timing columns.
CAMPAIGN_COLUMNS = (
    "trigger_event",
    "trigger_where",
    "goal_event",
    "goal_where",
    "goal_window_hours",
    "goal_exit",
    "reentry_allowed",
    "reentry_cooldown_hours",
    "send_window",
    "frequency_cap",
    "on_cap",
)


def step_row(step: Step) -> dict[str, Any]:
    return step.model_dump(exclude={"campaign_id"})


def live_steps(session: Session, campaign_id: int) -> list[Step]:
    return list(
        session.exec(
            select(Step).where(Step.campaign_id == campaign_id).order_by(col(Step.step_order))
        )
    )


def snapshot(session: Session, campaign: Campaign) -> dict[str, Any]:
    """The live definition, from the Step and Campaign rows."""
    return {
        "steps": [step_row(s) for s in live_steps(session, campaign.id or 0)],
        "campaign": {column: getattr(campaign, column) for column in CAMPAIGN_COLUMNS},
    }


def steps_from(version: CampaignVersion) -> list[Step]:
    """A version's steps as Step objects (never added to a session)."""
    return [
        Step(campaign_id=version.campaign_id, **row) for row in version.definition.get("steps", [])
    ]


def record_live(session: Session, campaign: Campaign, published_at: datetime) -> CampaignVersion:
    """The campaign's first live version, as it is activated (in the caller's transaction)."""
    version = CampaignVersion(
        campaign_id=campaign.id or 0,
        number=campaign.live_version,
        status=VersionStatus.LIVE,
        definition=snapshot(session, campaign),
        published_at=published_at,
    )
    session.add(version)
    session.flush()
    return version


def step_content(
    session: Session, enrollment: Enrollment, step_id: int, number: int = 0
) -> Step | None:
    """The step as the journey's version (`number`, else the enrollment's) defines it: the
    Step row on the live version, the version's snapshot on an older one (a `stay` journey
    keeps sending its own content). A step its version lacks (a journey that could not
    migrate sending a step since removed) is taken from the newest version that had it."""
    campaign = session.get(Campaign, enrollment.campaign_id)
    number = number or enrollment.campaign_version
    live = campaign is None or not number or number == campaign.live_version
    step = session.get(Step, step_id) if live else None
    if step is not None:
        return step
    versions = session.exec(
        select(CampaignVersion)
        .where(CampaignVersion.campaign_id == enrollment.campaign_id)
        .order_by(col(CampaignVersion.number).desc())
    ).all()
    ordered = sorted(versions, key=lambda v: v.number != number)  # its own version first
    for version in ordered:
        if version.published_at is None:
            continue  # a draft's content never goes out
        found = next((s for s in steps_from(version) if s.id == step_id), None)
        if found is not None:
            return found
    return None


def unbroadcast(engine: Engine, published_before: datetime) -> list[tuple[int, VersionChange]]:
    """Versions published with migrate or exit that the running journeys may not have heard of."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(CampaignVersion).where(
                col(CampaignVersion.broadcast).is_(False),
                col(CampaignVersion.published_at) < published_before,
            )
        ).all()
        return [
            (v.campaign_id, VersionChange(v.number, VersionPolicy(v.policy or "migrate")))
            for v in rows
        ]


def mark_broadcast(engine: Engine, campaign_id: int, number: int) -> None:
    with session_scope(engine) as session:
        session.execute(
            update(CampaignVersion)
            .where(
                col(CampaignVersion.campaign_id) == campaign_id,
                col(CampaignVersion.number) == number,
            )
            .values(broadcast=True)
        )
