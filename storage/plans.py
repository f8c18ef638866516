"""A campaign's journey plan (its steps, as a journey runs them) read from the database."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from domain.journey import (
    ConditionPlan,
    ConditionType,
    DelayUntilPlan,
    GoalPlan,
    JourneyPlan,
    SendWindowPlan,
    StepPlan,
)
from storage.models import Campaign, CampaignVersion, Step
from storage.versions import steps_from


def window_plan(stored: dict[str, Any] | None) -> SendWindowPlan | None:
    """A stored send window (a campaign's or a step's JSON column) as the plan carries it."""
    if not stored:
        return None
    return SendWindowPlan(
        days=list(stored["days"]),
        start=stored["start"],
        end=stored["end"],
        timezone=stored["timezone"],
        fallback_timezone=stored.get("fallback_timezone"),
    )


def read_plan(session: Session, campaign_id: int) -> JourneyPlan | None:
    """The live version's plan, or None if the campaign has no steps."""
    steps = session.exec(
        select(Step).where(Step.campaign_id == campaign_id).order_by(Step.step_order)  # type: ignore[arg-type]
    ).all()
    if not steps:
        return None
    return plan_of(campaign_id, list(steps), session.get(Campaign, campaign_id))


def version_plan(session: Session, campaign_id: int, number: int) -> JourneyPlan | None:
    """The plan of one version of the campaign, from its snapshot (services/versions.py);
    None if there is no such version."""
    version = session.get(CampaignVersion, (campaign_id, number))
    campaign = session.get(Campaign, campaign_id)
    if version is None or campaign is None:
        return None
    as_defined = Campaign.model_validate(campaign.model_dump())  # never added: a copy
    for column, value in version.definition.get("campaign", {}).items():
        setattr(as_defined, column, value)
    as_defined.live_version = number
    return plan_of(campaign_id, steps_from(version), as_defined)


def plan_of(campaign_id: int, steps: list[Step], campaign: Campaign | None) -> JourneyPlan:
    """The plan of these steps (in order) under this campaign's definition."""
    return JourneyPlan(
        campaign_id=campaign_id,
        version=campaign.live_version if campaign else 0,
        send_window=window_plan(campaign.send_window) if campaign else None,
        frequency_cap=campaign.frequency_cap if campaign else "apply",
        on_cap=campaign.on_cap if campaign else "defer",
        steps=[
            StepPlan(
                step_id=s.id or 0,
                step_order=s.step_order,
                delay_seconds=s.delay_hours * 3600,
                condition=_condition(s),
                has_alternative=s.alt_template_id is not None,
                delay_until=DelayUntilPlan(s.delay_until_field, s.delay_until_offset_hours)
                if s.delay_until_field is not None
                else None,
                send_window=window_plan(s.send_window),
                ignore_send_window=s.ignore_send_window,
            )
            for s in steps
        ],
        goal=_goal(campaign) if campaign is not None else None,
    )


def _condition(step: Step) -> ConditionPlan | None:
    if not step.condition_type:
        return None
    return ConditionPlan(
        ConditionType(step.condition_type),
        step.condition_step_id or 0,
        step.condition_url,
        event=step.condition_event,
        where=step.condition_where,
        match=step.condition_match,
        wait_seconds=step.condition_wait_hours * 3600 if step.condition_wait_hours else None,
    )


def _goal(campaign: Campaign) -> GoalPlan | None:
    if campaign.goal_event is None:
        return None
    return GoalPlan(
        event=campaign.goal_event,
        where=campaign.goal_where,
        window_seconds=(campaign.goal_window_hours or 0) * 3600,
        exit=campaign.goal_exit,
    )


def plans_of(session: Session, campaign_ids: set[int]) -> dict[int, JourneyPlan | None]:
    return {campaign_id: read_plan(session, campaign_id) for campaign_id in campaign_ids}
