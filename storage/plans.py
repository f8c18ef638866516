"""A campaign's journey plan (its steps, as a journey runs them) read from the database."""

from __future__ import annotations

from sqlmodel import Session, select

from domain.journey import ConditionPlan, ConditionType, JourneyPlan, StepPlan
from storage.models import Step


def read_plan(session: Session, campaign_id: int) -> JourneyPlan | None:
    """The plan, or None if the campaign has no steps."""
    steps = session.exec(
        select(Step).where(Step.campaign_id == campaign_id).order_by(Step.step_order)  # type: ignore[arg-type]
    ).all()
    if not steps:
        return None
    return JourneyPlan(
        campaign_id=campaign_id,
        steps=[
            StepPlan(
                step_id=s.id or 0,
                step_order=s.step_order,
                delay_seconds=s.delay_hours * 3600,
                condition=ConditionPlan(
                    ConditionType(s.condition_type), s.condition_step_id or 0, s.condition_url
                )
                if s.condition_type
                else None,
                has_alternative=s.alt_template_id is not None,
            )
            for s in steps
        ],
    )


def plans_of(session: Session, campaign_ids: set[int]) -> dict[int, JourneyPlan | None]:
    return {campaign_id: read_plan(session, campaign_id) for campaign_id in campaign_ids}
