"""Campaign versions: a draft of the next version, its definition, publishing it with an
in-flight policy (previewed with `dry_run`). The rules are services/versions.py's."""

from __future__ import annotations

from fastapi import APIRouter
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from api.deps import CampaignDep, EngineDep, JourneysDep, SessionDep, load_or_404
from api.errors import problems
from api.pagination import CursorQuery, LimitQuery, decode, page
from api.routes.campaigns import step_public
from api.schemas import (
    GoalOut,
    MoveOut,
    PublishImpact,
    PublishRequest,
    ReentryOut,
    SendWindowIn,
    StepCountOut,
    TemplateChangeOut,
    TriggerOut,
    VersionDefinition,
    VersionPage,
    VersionPreviewRequest,
    VersionPublic,
    VersionSummary,
)
from domain.versions import VersionChange, VersionPolicy
from services import versions
from services.errors import Invalid
from storage.models import Campaign, CampaignVersion
from storage.versions import steps_from

router = APIRouter(prefix="/api/campaigns", tags=["versions"])


def _summary(version: CampaignVersion, journeys: dict[int, int]) -> VersionSummary:
    return VersionSummary(
        version=version.number,
        status=version.status,
        created_at=version.created_at,
        published_at=version.published_at,
        policy=version.policy,
        journeys=journeys.get(version.number, 0),
    )


def _public(session: Session, campaign: Campaign, version: CampaignVersion) -> VersionPublic:
    summary = _summary(version, versions.journeys_per_version(session, campaign))
    part = version.definition.get("campaign", {})
    return VersionPublic(
        **summary.model_dump(),
        steps=[step_public(s) for s in steps_from(version)],
        send_window=SendWindowIn.model_validate(part["send_window"])
        if part.get("send_window")
        else None,
        goal=GoalOut(
            event=part["goal_event"],
            where=part.get("goal_where"),
            window_hours=part.get("goal_window_hours") or 0,
            exit=part.get("goal_exit", True),
        )
        if part.get("goal_event")
        else None,
        trigger=TriggerOut(event=part["trigger_event"], where=part.get("trigger_where"))
        if part.get("trigger_event")
        else None,
        reentry=ReentryOut(allowed=True, cooldown_hours=part.get("reentry_cooldown_hours", 0))
        if part.get("reentry_allowed")
        else None,
        frequency_cap=part.get("frequency_cap", "apply"),
        on_cap=part.get("on_cap", "defer"),
    )


@router.post(
    "/{campaign_id}/versions",
    operation_id="createCampaignVersion",
    summary="Create the draft of a campaign's next version",
    responses=problems(404, 409),
    status_code=201,
    response_model=VersionPublic,
)
def create_version(campaign: CampaignDep, session: SessionDep) -> VersionPublic:
    """A copy of the live version, as a draft to edit (at most one draft: else 409)."""
    return _public(session, campaign, versions.create_draft(session, campaign))


@router.get(
    "/{campaign_id}/versions",
    operation_id="listCampaignVersions",
    summary="List a campaign's versions",
    responses=problems(404),
    response_model=VersionPage,
)
def list_versions(
    campaign: CampaignDep, session: SessionDep, limit: LimitQuery = 100, cursor: CursorQuery = None
) -> VersionPage:
    """Oldest first, with how many running journeys are on each."""
    key = decode(cursor, 1)
    rows = [
        v for v in versions.versions_of(session, campaign) if key is None or v.number > int(key[0])
    ]
    journeys = versions.journeys_per_version(session, campaign)
    listed = page(rows[: limit + 1], limit, lambda v: (v.number,), lambda v: _summary(v, journeys))
    return VersionPage(items=listed.items, next_cursor=listed.next_cursor)


@router.get(
    "/{campaign_id}/versions/{number}",
    operation_id="getCampaignVersion",
    summary="Read a campaign version",
    responses=problems(404),
    response_model=VersionPublic,
)
def get_version(campaign: CampaignDep, number: int, session: SessionDep) -> VersionPublic:
    return _public(session, campaign, versions.get_version(session, campaign, number))


@router.put(
    "/{campaign_id}/versions/{number}",
    operation_id="replaceCampaignVersion",
    summary="Replace a draft version's definition",
    responses=problems(404, 409),
    response_model=VersionPublic,
)
def replace_version(
    campaign: CampaignDep, number: int, body: VersionDefinition, session: SessionDep
) -> VersionPublic:
    """Declarative: a step with an existing step's `id` is that step, edited in place; a step
    without is new; a step left out is removed. Validated as a new campaign (422 naming the
    field); only a draft is edited (409)."""
    version = versions.replace_draft(session, campaign, number, body.model_dump())
    return _public(session, campaign, version)


@router.post(
    "/{campaign_id}/versions/{number}/publish",
    operation_id="publishCampaignVersion",
    summary="Publish a draft version, or preview its impact",
    responses={**problems(404, 409), 201: {"model": VersionPublic}},
    response_model=PublishImpact | VersionPublic,
)
async def publish_version(
    campaign_id: int,
    number: int,
    body: PublishRequest,
    session: SessionDep,
    engine: EngineDep,
    journeys: JourneysDep,
) -> PublishImpact | VersionPublic:
    """With `dry_run`: nothing changes; the impact on the journeys in flight (how many wait
    before each live step, where each group goes with `migrate`, how many `exit`), counted
    from the database. Without: the draft becomes the live version new enrollments start on;
    running journeys `stay` on theirs, `migrate` at their next step boundary, or `exit`."""
    answer, change = await run_in_threadpool(publish_or_preview, session, campaign_id, number, body)
    if change is not None:  # migrate, exit: one batch signal; the outbox re-sends it if lost
        journeys.in_background(versions.tell_journeys(engine, journeys, campaign_id, change))
    return answer


@router.post(
    "/{campaign_id}/versions/preview",
    operation_id="previewCampaignVersion",
    summary="Preview publishing a definition, without storing a version",
    responses=problems(404, 409),
    response_model=PublishImpact,
)
def preview_version(
    campaign: CampaignDep, body: VersionPreviewRequest, session: SessionDep
) -> PublishImpact:
    """The impact a version with this definition would have if published with `policy`, as
    a draft's `dry_run` answers it (the same counts), validated like the PUT (422 naming the
    field); no version is stored and nothing changes."""
    definition = body.definition.model_dump()
    try:
        impact = versions.preview(session, campaign, definition, VersionPolicy(body.policy))
    except Invalid as exc:  # named as in the PUT's body: here the definition is one level down
        raise Invalid(["body", "definition", *exc.loc[1:]], exc.msg) from exc
    return _impact_out(impact)


def publish_or_preview(
    session: Session, campaign_id: int, number: int, body: PublishRequest
) -> tuple[PublishImpact | VersionPublic, VersionChange | None]:
    campaign = load_or_404(session, campaign_id)
    policy = VersionPolicy(body.policy)
    version = versions.get_version(session, campaign, number)
    if body.dry_run:
        versions.require_draft(version, "published")
        return _impact_out(versions.impact(session, campaign, version, policy)), None
    change = versions.publish(session, campaign, number, policy)
    return _public(session, campaign, versions.get_version(session, campaign, number)), change


def _impact_out(impact: versions.Impact) -> PublishImpact:
    return PublishImpact(
        policy=impact.policy.value,
        in_flight=impact.in_flight,
        waiting_before=[StepCountOut(step_id=c.step_id, count=c.count)
                        for c in impact.waiting_before],
        moves=[MoveOut(from_step=m.from_step, to_step=m.to_step, count=m.count)
               for m in impact.moves],
        exits=impact.exits,
        template_changes=[
            TemplateChangeOut(version=t.version, step_id=t.step_id,
                              template_id=t.template_id, updated_at=t.updated_at)
            for t in impact.template_changes
        ],
    )  # fmt: skip
