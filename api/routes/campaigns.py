"""Campaigns, their steps and their stats (all under /api/campaigns, as the spec puts them)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response
from sqlalchemy import func
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from api.deps import CampaignDep, EngineDep, JourneysDep, SessionDep, load_or_404
from api.errors import conflict, not_found, problems
from api.idempotency import Idempotent
from api.schemas import (
    AlternativeOut,
    CampaignCreate,
    CampaignPublic,
    CampaignStats,
    CampaignSummary,
    CampaignUpdate,
    ConditionOut,
    DelayUntilIn,
    GoalOut,
    ReentryOut,
    SendWindowIn,
    StepCreate,
    StepPublic,
    StepReorder,
    StepUpdate,
    TriggerOut,
    VariantOut,
    WinnerOut,
)
from domain.journey import CampaignChange, CampaignStatus
from services.campaigns import (
    DEFINITION,
    DEFINITION_COLUMNS,
    apply_definition,
    apply_step,
    check_order,
    renumber,
    require_draft,
    steps_of,
    tell_journeys,
    update,
)
from services.variants import tests_of
from storage import counters
from storage.counters import Metric
from storage.models import Campaign, Step, VariantTest

router = APIRouter(prefix="/api/campaigns", tags=["campaigns"])

CampaignIdQuery = Query(description="ID of the campaign")

# --- reading ---------------------------------------------------------------------------------


def winner_public(step: Step, test: VariantTest | None) -> WinnerOut | None:
    if step.winner is None:
        return None
    if test is None or test.winner is None:
        return WinnerOut(**step.winner)
    return WinnerOut(**step.winner, chosen=test.winner, chosen_at=test.chosen_at)


def step_public(step: Step, test: VariantTest | None = None) -> StepPublic:
    return StepPublic(
        id=step.id or 0,
        step_order=step.step_order,
        subject=step.subject,
        delay_hours=step.delay_hours,
        template_id=step.template_id,
        condition=ConditionOut(
            type=step.condition_type,
            step_id=step.condition_step_id,
            url=step.condition_url,
            event=step.condition_event,
            where=step.condition_where,
            match=step.condition_match,
            wait_hours=step.condition_wait_hours,
        )
        if step.condition_type
        else None,
        alternative=AlternativeOut(subject=step.alt_subject or "", template_id=step.alt_template_id)
        if step.alt_template_id is not None
        else None,
        delay_until=DelayUntilIn(
            field=step.delay_until_field, offset_hours=step.delay_until_offset_hours
        )
        if step.delay_until_field is not None
        else None,
        send_window=SendWindowIn.model_validate(step.send_window) if step.send_window else None,
        ignore_send_window=True if step.ignore_send_window else None,
        variants=[VariantOut(**v) for v in step.variants] if step.variants else None,
        winner=winner_public(step, test),
    )


def _counts(session: Session, campaign_ids: list[int]) -> tuple[dict[int, int], dict[int, int]]:
    if not campaign_ids:
        return {}, {}
    steps = dict(
        session.exec(
            select(Step.campaign_id, func.count())
            .where(col(Step.campaign_id).in_(campaign_ids))
            .group_by(col(Step.campaign_id))
        ).all()
    )
    # From the running counters, so the list and a campaign cost the same at any size.
    recipients = counters.recipients_of(session, campaign_ids)
    return steps, recipients


def _public(session: Session, campaign: Campaign) -> CampaignPublic:
    steps = steps_of(session, campaign.id or 0)
    tests = tests_of(session, campaign.id or 0)
    _, recipients = _counts(session, [campaign.id or 0])
    return CampaignPublic(
        id=campaign.id or 0,
        name=campaign.name,
        status=campaign.status,
        status_reason=campaign.status_reason,
        created_at=campaign.created_at,
        updated_at=campaign.updated_at,
        from_email=campaign.from_email,
        from_name=campaign.from_name,
        reply_to=campaign.reply_to,
        steps_count=len(steps),
        recipients_count=recipients.get(campaign.id or 0, 0),
        trigger=TriggerOut(event=campaign.trigger_event, where=campaign.trigger_where)
        if campaign.trigger_event
        else None,
        goal=GoalOut(
            event=campaign.goal_event,
            where=campaign.goal_where,
            window_hours=campaign.goal_window_hours or 0,
            exit=campaign.goal_exit,
        )
        if campaign.goal_event
        else None,
        reentry=ReentryOut(allowed=True, cooldown_hours=campaign.reentry_cooldown_hours)
        if campaign.reentry_allowed
        else None,
        steps=[step_public(s, tests.get(s.id or 0)) for s in steps],
        send_window=SendWindowIn.model_validate(campaign.send_window)
        if campaign.send_window
        else None,
        frequency_cap=campaign.frequency_cap,
        on_cap=campaign.on_cap,
    )


@router.get(
    "", operation_id="listCampaigns", summary="List campaigns", response_model=list[CampaignSummary]
)
def list_campaigns(session: SessionDep) -> list[CampaignSummary]:
    """All campaigns with their current status and metadata."""
    campaigns = list(session.exec(select(Campaign).order_by(col(Campaign.id))))
    steps, recipients = _counts(session, [c.id or 0 for c in campaigns])
    return [
        CampaignSummary(
            id=c.id or 0,
            name=c.name,
            status=c.status,
            created_at=c.created_at,
            steps_count=steps.get(c.id or 0, 0),
            recipients_count=recipients.get(c.id or 0, 0),
        )
        for c in campaigns
    ]


@router.get(
    "/steps",
    operation_id="listSteps",
    summary="List a campaign's steps",
    responses=problems(404),
    response_model=list[StepPublic],
    response_model_exclude_none=True,
    tags=["steps"],
)
def liststeps_of(session: SessionDep, campaign_id: int = CampaignIdQuery) -> list[StepPublic]:
    """The campaign's steps in order."""
    if session.get(Campaign, campaign_id) is None:
        raise not_found("campaign", campaign_id)
    return [step_public(s) for s in steps_of(session, campaign_id)]


@router.get(
    "/stats",
    operation_id="getCampaignStats",
    summary="Read a campaign's stats",
    responses=problems(404),
    response_model=CampaignStats,
    tags=["stats"],
)
def campaign_stats(session: SessionDep, campaign_id: int = CampaignIdQuery) -> CampaignStats:
    """Recipients, completed journeys and rates. `recipients`: entries (a person who entered
    twice counts twice); `completed`: journeys that reached the end or that the campaign's goal
    ended (`converted`); `open_rate` / `click_rate`: recipients with at least one human open
    (a click counts as an open) / click, over recipients. Rates are rounded to 3 decimals, 0
    with no recipients.
    Read from running counters (storage/counters.py): the same cost at any campaign size."""
    if session.get(Campaign, campaign_id) is None:
        raise not_found("campaign", campaign_id)
    counts = counters.read(session, campaign_id)
    recipients, completed, opened, clicked = (
        counts.get((counters.CAMPAIGN, metric), 0)
        for metric in (Metric.RECIPIENTS, Metric.COMPLETED, Metric.OPENED, Metric.CLICKED)
    )

    def rate(n: int) -> float:
        return round(n / recipients, 3) if recipients else 0

    return CampaignStats(
        campaign_id=campaign_id,
        recipients=recipients,
        completed=completed,
        completion_rate=rate(completed),
        open_rate=rate(opened),
        click_rate=rate(clicked),
    )


@router.get(
    "/{campaign_id}",
    operation_id="getCampaign",
    summary="Read a campaign with its steps",
    responses=problems(404),
    response_model=CampaignPublic,
    response_model_exclude_none=False,
)
def get_campaign(campaign: CampaignDep, session: SessionDep) -> CampaignPublic:
    return _public(session, campaign)


# --- writing ---------------------------------------------------------------------------------


@router.post(
    "",
    operation_id="createCampaign",
    summary="Create a campaign with its steps",
    responses=problems(409),
    status_code=201,
    response_model=CampaignPublic,
    dependencies=[Idempotent],
)
def create_campaign(body: CampaignCreate, session: SessionDep) -> CampaignPublic:
    campaign = Campaign(
        name=body.name,
        from_email=body.from_email,
        from_name=body.from_name,
        reply_to=body.reply_to,
        send_window=body.send_window.model_dump() if body.send_window else None,
        frequency_cap=body.frequency_cap,
        on_cap=body.on_cap,
    )
    session.add(campaign)
    session.flush()
    apply_definition(session, campaign, body.model_dump(include=set(DEFINITION)))
    earlier: dict[int, Step] = {}
    for index, step_body in enumerate(body.steps):
        step = Step(campaign_id=campaign.id or 0, step_order=index + 1, subject="", template_id=0)
        apply_step(session, step, step_body.model_dump(), ["body", "steps", index], earlier)
        session.add(step)
        session.flush()
        earlier[step.step_order] = step
    session.commit()  # one transaction: an invalid step leaves nothing behind
    return _public(session, campaign)


@router.patch(
    "/{campaign_id}",
    operation_id="updateCampaign",
    summary="Change a campaign's name, sender or status",
    responses=problems(404, 409),
    response_model=CampaignPublic,
)
async def update_campaign(
    campaign_id: int,
    body: CampaignUpdate,
    session: SessionDep,
    engine: EngineDep,
    journeys: JourneysDep,
) -> CampaignPublic:
    public, change = await run_in_threadpool(apply_update, session, campaign_id, body)
    if change is not None:
        journeys.in_background(tell_journeys(engine, journeys, campaign_id, change))
    return public


def apply_update(
    session: Session, campaign_id: int, body: CampaignUpdate
) -> tuple[CampaignPublic, CampaignChange | None]:
    """The PATCH's database half, for every caller of it (the dashboard too): the campaign
    after `body`, and the status change its running journeys must still be told of, if any."""
    campaign = load_or_404(session, campaign_id)
    change = update(session, campaign, body.model_dump(exclude_unset=True))
    return _public(session, campaign), change


@router.delete(
    "/{campaign_id}",
    operation_id="deleteCampaign",
    summary="Delete a draft campaign",
    responses=problems(404, 409),
    status_code=204,
)
def delete_campaign(campaign: CampaignDep, session: SessionDep) -> Response:
    if campaign.status != CampaignStatus.DRAFT:
        raise conflict(
            f"campaign {campaign.id} is {campaign.status}: only drafts can be deleted; archive it"
        )
    for step in steps_of(session, campaign.id or 0):
        session.delete(step)
    session.flush()
    session.delete(campaign)
    session.commit()
    return Response(status_code=204)


@router.post(
    "/{campaign_id}/clone",
    operation_id="cloneCampaign",
    summary="Copy a campaign and its steps into a new draft",
    responses=problems(404),
    status_code=201,
    response_model=CampaignPublic,
)
def clone_campaign(campaign: CampaignDep, session: SessionDep) -> CampaignPublic:
    copy = Campaign(
        name=f"{campaign.name} (copy)",
        from_email=campaign.from_email,
        from_name=campaign.from_name,
        reply_to=campaign.reply_to,
        **campaign.model_dump(include=set(DEFINITION_COLUMNS)),
        send_window=campaign.send_window,
        frequency_cap=campaign.frequency_cap,
        on_cap=campaign.on_cap,
    )
    session.add(copy)
    session.flush()
    new_ids: dict[int, int] = {}
    for step in steps_of(session, campaign.id or 0):
        data = step.model_dump(exclude={"id", "campaign_id"})
        if step.condition_step_id is not None:
            data["condition_step_id"] = new_ids[step.condition_step_id]
        new = Step(campaign_id=copy.id or 0, **data)
        session.add(new)
        session.flush()
        new_ids[step.id or 0] = new.id or 0
    session.commit()
    return _public(session, copy)


# --- steps of a draft ------------------------------------------------------------------------


def _load_step(session: Session, step_id: int) -> tuple[Step, Campaign]:
    step = session.get(Step, step_id)
    if step is None:
        raise not_found("step", step_id)
    campaign = session.get(Campaign, step.campaign_id)
    assert campaign is not None
    return step, campaign


@router.post(
    "/steps",
    operation_id="createStep",
    summary="Append a step to a draft campaign",
    responses=problems(404, 409),
    status_code=201,
    response_model=StepPublic,
    response_model_exclude_none=True,
    tags=["steps"],
)
def append_step(
    body: StepCreate, session: SessionDep, campaign_id: int = CampaignIdQuery
) -> StepPublic:
    """Append a step to a draft campaign."""
    campaign = load_or_404(session, campaign_id)
    require_draft(campaign)
    existing = steps_of(session, campaign_id)
    earlier = {s.step_order: s for s in existing}
    step = Step(campaign_id=campaign_id, step_order=len(existing) + 1, subject="", template_id=0)
    apply_step(session, step, body.model_dump(), ["body"], earlier)
    session.add(step)
    session.commit()
    return step_public(step)


@router.patch(
    "/steps/{step_id}",
    operation_id="updateStep",
    summary="Change a step of a draft campaign",
    responses=problems(404, 409),
    response_model=StepPublic,
    response_model_exclude_none=True,
    tags=["steps"],
)
def update_step(step_id: int, body: StepUpdate, session: SessionDep) -> StepPublic:
    step, campaign = _load_step(session, step_id)
    require_draft(campaign)
    earlier = {
        s.step_order: s
        for s in steps_of(session, campaign.id or 0)
        if s.step_order < step.step_order
    }
    apply_step(session, step, body.model_dump(exclude_unset=True), ["body"], earlier)
    session.add(step)
    session.commit()
    return step_public(step)


@router.delete(
    "/steps/{step_id}",
    operation_id="deleteStep",
    summary="Delete a step of a draft campaign",
    responses=problems(404, 409),
    status_code=204,
    tags=["steps"],
)
def delete_step(step_id: int, session: SessionDep) -> Response:
    step, campaign = _load_step(session, step_id)
    require_draft(campaign)
    steps = steps_of(session, campaign.id or 0)
    dependent = next((s for s in steps if s.condition_step_id == step_id), None)
    if dependent is not None:
        raise conflict(f"step {dependent.id} has a condition on step {step_id}: change it first")
    session.delete(step)
    session.flush()
    renumber(session, [s for s in steps if s.id != step_id])
    session.commit()
    return Response(status_code=204)


@router.post(
    "/steps/reorder",
    operation_id="reorderSteps",
    summary="Reorder a draft campaign's steps",
    responses=problems(404, 409),
    response_model=list[StepPublic],
    response_model_exclude_none=True,
    tags=["steps"],
)
def reordersteps_of(
    body: StepReorder, session: SessionDep, campaign_id: int = CampaignIdQuery
) -> list[StepPublic]:
    """Put a draft's steps in the given order (every step id exactly once)."""
    campaign = load_or_404(session, campaign_id)
    require_draft(campaign)
    steps = {s.id or 0: s for s in steps_of(session, campaign_id)}
    ordered = check_order(campaign_id, steps, body.step_ids)
    renumber(session, ordered)
    session.commit()
    return [step_public(s) for s in ordered]
