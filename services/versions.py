"""Campaign versions (issue 14): a draft of the next version, edited declaratively, published
with an in-flight policy and previewed first. The live version's steps are the Step rows
(what the spec's steps endpoint shows and new enrollments start on); every version keeps a
snapshot of its definition, which journeys still on it send from (`step_content`)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from domain.journey import CampaignStatus, JourneyStatus
from domain.versions import VersionChange, VersionPolicy, VersionStatus, resume_index
from services.campaigns import DEFINITION, TIMING_FIELDS, apply_definition, apply_step, steps_of
from services.errors import Conflict, Invalid, NotFound
from services.journeys import BROADCAST_GIVE_UP_SECONDS, Journeys
from storage.models import Campaign, CampaignVersion, Enrollment, Step, Template, utcnow
from storage.versions import CAMPAIGN_COLUMNS, mark_broadcast, record_live, step_row, steps_from


@dataclass
class StepCount:
    step_id: int
    count: int


@dataclass
class Move:
    from_step: int  # the step the journeys wait before
    to_step: int | None  # where they continue; None: past the end, they finish
    count: int


@dataclass
class TemplateChange:
    version: int
    step_id: int
    template_id: int
    updated_at: datetime


@dataclass
class Impact:
    """What publishing would do to the running journeys (counted from the enrollment rows)."""

    policy: VersionPolicy
    in_flight: int
    waiting_before: list[StepCount] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    exits: int = 0
    # Templates edited since a version they belong to was published: a template edit reaches
    # in-flight sends at once, whatever version their journey is on.
    template_changes: list[TemplateChange] = field(default_factory=list)


# --- reading ---------------------------------------------------------------------------------


def versions_of(session: Session, campaign: Campaign) -> list[CampaignVersion]:
    """Every version, oldest first; the live one is written the first time it is asked for
    (campaigns activated before versions existed)."""
    rows = list(
        session.exec(
            select(CampaignVersion)
            .where(CampaignVersion.campaign_id == campaign.id)
            .order_by(col(CampaignVersion.number))
        )
    )
    if rows or campaign.status == CampaignStatus.DRAFT:
        return rows
    return [record_live(session, campaign, campaign.updated_at)]


def get_version(session: Session, campaign: Campaign, number: int) -> CampaignVersion:
    version = next((v for v in versions_of(session, campaign) if v.number == number), None)
    if version is None:
        raise NotFound("version", f"{number} of campaign {campaign.id}")
    return version


def journeys_per_version(session: Session, campaign: Campaign) -> dict[int, int]:
    """Running journeys by the version they are on."""
    rows = session.exec(
        select(Enrollment.campaign_version, func.count())
        .where(Enrollment.campaign_id == campaign.id, Enrollment.status == JourneyStatus.ACTIVE)
        .group_by(col(Enrollment.campaign_version))
    ).all()
    counts: dict[int, int] = defaultdict(int)
    for number, count in rows:
        counts[number or campaign.live_version] += count
    return dict(counts)


# --- drafts ----------------------------------------------------------------------------------


def create_draft(session: Session, campaign: Campaign) -> CampaignVersion:
    """The next version's draft, a copy of the live one; at most one draft at a time."""
    if campaign.status == CampaignStatus.DRAFT:
        raise Conflict(f"campaign {campaign.id} is a draft: edit its steps directly")
    if campaign.status == CampaignStatus.ARCHIVED:
        raise Conflict(f"campaign {campaign.id} is archived: it gets no new version")
    versions = versions_of(session, campaign)
    draft = next((v for v in versions if v.status == VersionStatus.DRAFT), None)
    if draft is not None:
        raise Conflict(
            f"campaign {campaign.id} already has a draft, version {draft.number}: "
            "edit or publish it"
        )
    live = next(v for v in versions if v.status == VersionStatus.LIVE)
    version = CampaignVersion(
        campaign_id=campaign.id or 0,
        number=max(v.number for v in versions) + 1,
        status=VersionStatus.DRAFT,
        definition=dict(live.definition),
    )
    session.add(version)
    session.commit()
    return version


def require_draft(version: CampaignVersion, doing: str) -> None:
    if version.status != VersionStatus.DRAFT:
        raise Conflict(
            f"version {version.number} of campaign {version.campaign_id} is {version.status}: "
            f"only a draft can be {doing}; create a new version"
        )


def replace_draft(
    session: Session, campaign: Campaign, number: int, body: Mapping[str, Any]
) -> CampaignVersion:
    """Replace a draft's definition with `body` (a create payload's `steps`, `send_window`,
    `goal`, `trigger`, ...): a step with an existing step's `id` is that step, edited in place;
    one without is new; a step left out is removed. Validated as a new campaign's steps."""
    version = get_version(session, campaign, number)
    require_draft(version, "edited")
    version.definition = definition_from(session, campaign, version.definition, body)
    session.add(version)
    session.commit()
    return version


def definition_from(
    session: Session, campaign: Campaign, base: Mapping[str, Any], body: Mapping[str, Any]
) -> dict[str, Any]:
    """The definition `body` makes of `base` (a version's), validated as a new campaign's
    steps (Invalid naming the field); nothing is written."""
    known = {row["id"] for row in base.get("steps", [])} | {
        s.id for s in steps_of(session, campaign.id or 0)
    }
    draft_campaign = Campaign.model_validate(campaign.model_dump())  # never added: a copy
    for column, value in base.get("campaign", {}).items():
        setattr(draft_campaign, column, value)
    apply_definition(session, draft_campaign, {k: body[k] for k in DEFINITION if k in body})
    for column in TIMING_FIELDS:
        if column in body:
            setattr(draft_campaign, column, body[column])
    steps: list[Step] = []
    earlier: dict[int, Step] = {}
    new_id = min([0, *(i for i in known if i is not None)])
    for index, step_body in enumerate(body.get("steps", [])):
        loc: list[str | int] = ["body", "steps", index]
        step_id = step_body.get("id")
        if step_id is not None:
            _check_step_id(session, campaign, step_id, known, [*loc, "id"])
            if any(s.id == step_id for s in steps):
                raise Invalid([*loc, "id"], f"step {step_id} is listed twice")
        else:
            new_id -= 1
            step_id = new_id  # a new step: its real id is given when the version is published
        step = Step(
            id=step_id, campaign_id=campaign.id or 0, step_order=index + 1, subject="",
            template_id=0,
        )  # fmt: skip
        changes = {k: v for k, v in step_body.items() if k != "id"}
        apply_step(session, step, changes, loc, earlier)
        steps.append(step)
        earlier[step.step_order] = step
    return {
        "steps": [step_row(s) for s in steps],
        "campaign": {column: getattr(draft_campaign, column) for column in CAMPAIGN_COLUMNS},
    }


def _check_step_id(
    session: Session, campaign: Campaign, step_id: int, known: set[int | None], loc: list[str | int]
) -> None:
    if step_id in known:
        return
    other = session.get(Step, step_id)
    if other is not None:
        raise Invalid(loc, f"step {step_id} belongs to campaign {other.campaign_id}, not this one")
    raise Invalid(loc, f"step {step_id} is not a step of campaign {campaign.id}: leave id out")


# --- the preview -----------------------------------------------------------------------------


def preview(
    session: Session, campaign: Campaign, body: Mapping[str, Any], policy: VersionPolicy
) -> Impact:
    """What publishing a version with definition `body` (as `replace_draft` takes it) would
    do, without storing one: the live version's definition edited, then `impact`'s counts."""
    if campaign.status in (CampaignStatus.DRAFT, CampaignStatus.ARCHIVED):
        raise Conflict(
            f"campaign {campaign.id} is {campaign.status}: it has no journeys to preview"
        )
    live = get_version(session, campaign, campaign.live_version)
    definition = definition_from(session, campaign, live.definition, body)
    unsaved = CampaignVersion(  # never added to the session: nothing is written
        campaign_id=campaign.id or 0, number=0, status=VersionStatus.DRAFT, definition=definition
    )
    return impact(session, campaign, unsaved, policy)


def impact(
    session: Session, campaign: Campaign, version: CampaignVersion, policy: VersionPolicy
) -> Impact:
    """What publishing `version` with `policy` would do, counted from the enrollment rows
    (status and current_step): never by asking the journeys."""
    versions = {v.number: v for v in versions_of(session, campaign)}
    new_ids = [s.id or 0 for s in steps_from(version)]
    rows = session.exec(
        select(Enrollment.campaign_version, Enrollment.current_step, func.count())
        .where(Enrollment.campaign_id == campaign.id, Enrollment.status == JourneyStatus.ACTIVE)
        .group_by(col(Enrollment.campaign_version), col(Enrollment.current_step))
    ).all()
    waiting: dict[int, int] = defaultdict(int)
    moves: dict[tuple[int, int | None], int] = defaultdict(int)
    in_flight = 0
    for number, current_step, count in rows:
        in_flight += count
        on = versions.get(number or campaign.live_version)
        old_ids = [s.id or 0 for s in steps_from(on)] if on is not None else []
        if current_step >= len(old_ids):
            continue  # past its last step: finishing, waiting for nothing
        waiting[old_ids[current_step]] += count
        if policy == VersionPolicy.MIGRATE:
            at = resume_index(old_ids[:current_step], new_ids)
            moves[(old_ids[current_step], new_ids[at] if at < len(new_ids) else None)] += count
    return Impact(
        policy=policy,
        in_flight=in_flight,
        waiting_before=[StepCount(step_id, n) for step_id, n in sorted(waiting.items())],
        moves=[Move(a, b, n) for (a, b), n in sorted(moves.items(), key=lambda m: m[0][0])],
        exits=in_flight if policy == VersionPolicy.EXIT else 0,
        template_changes=template_changes(session, list(versions.values())),
    )


def template_changes(session: Session, versions: list[CampaignVersion]) -> list[TemplateChange]:
    """The templates edited since each published version they belong to was published."""
    changes = []
    for version in versions:
        if version.published_at is None:
            continue
        published = _aware(version.published_at)
        for step in steps_from(version):
            for template_id in (step.template_id, step.alt_template_id):
                template = session.get(Template, template_id) if template_id else None
                if template is not None and _aware(template.updated_at) > published:
                    changes.append(
                        TemplateChange(version.number, step.id or 0, template_id or 0,
                                       template.updated_at)
                    )  # fmt: skip
    return changes


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --- publishing ------------------------------------------------------------------------------


def publish(
    session: Session, campaign: Campaign, number: int, policy: VersionPolicy
) -> VersionChange | None:
    """Make the draft `number` live in one transaction: the Step and Campaign rows take its
    definition (edited steps keep their ids, new ones get theirs, removed ones go: their
    content stays in the snapshots of the versions that had them). Running journeys stay on
    their version, or (migrate) are on the new one from now on; the change the running
    journeys must be told of is returned (migrate, exit)."""
    version = get_version(session, campaign, number)
    require_draft(version, "published")
    if campaign.status not in (CampaignStatus.ACTIVE, CampaignStatus.PAUSED):
        raise Conflict(f"campaign {campaign.id} is {campaign.status}: it cannot be published to")
    live = get_version(session, campaign, campaign.live_version)
    current = {s.id: s for s in steps_of(session, campaign.id or 0)}
    real_ids: dict[int, int] = {}
    rows: list[dict[str, Any]] = []
    for draft_step in steps_from(version):
        draft_id = draft_step.id or 0
        step = current.pop(draft_id, None) or Step(
            campaign_id=campaign.id or 0, step_order=0, subject="", template_id=0
        )
        for key, value in draft_step.model_dump(exclude={"id", "campaign_id"}).items():
            setattr(step, key, value)
        if step.condition_step_id is not None:
            step.condition_step_id = real_ids.get(step.condition_step_id, step.condition_step_id)
        session.add(step)
        session.flush()
        real_ids[draft_id] = step.id or 0
        rows.append(step_row(step))
    for removed in current.values():
        session.delete(removed)
    for column, value in version.definition.get("campaign", {}).items():
        setattr(campaign, column, value)
    now = utcnow()
    version.definition = {**version.definition, "steps": rows}
    version.status, version.published_at, version.policy = VersionStatus.LIVE, now, policy
    live.status = VersionStatus.RETIRED
    session.execute(  # journeys not on the live version now say which they are on
        update(Enrollment)
        .where(col(Enrollment.campaign_id) == campaign.id, col(Enrollment.campaign_version) == 0)
        .values(campaign_version=live.number)
    )
    change = None
    if policy == VersionPolicy.MIGRATE:
        session.execute(  # what they send is read from the new version from now on
            update(Enrollment)
            .where(
                col(Enrollment.campaign_id) == campaign.id,
                col(Enrollment.status) == JourneyStatus.ACTIVE,
            )
            .values(campaign_version=0)
        )
    if policy != VersionPolicy.STAY:
        change = VersionChange(number, policy)
        version.broadcast = False
    campaign.live_version = number
    campaign.updated_at = now
    session.add_all([campaign, version, live])
    session.commit()
    return change


async def tell_journeys(
    engine: Engine,
    journeys: Journeys,
    campaign_id: int,
    change: VersionChange,
    patience: float = BROADCAST_GIVE_UP_SECONDS,
) -> bool:
    """Batch-signal a migrate or exit to the campaign's running journeys and record it as
    told; if it does not go through, the outbox tries again."""
    told = await journeys.broadcast_version(campaign_id, change, patience)
    if told:
        await asyncio.to_thread(mark_broadcast, engine, campaign_id, change.version)
    return told
