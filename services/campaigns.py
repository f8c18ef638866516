"""Campaigns' rules: which status may follow which, and what makes a step valid. The routes
(api/routes/campaigns.py) only translate HTTP to these and back."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from domain.journey import PRODUCT_CONDITIONS, CampaignChange, CampaignStatus, ConditionType
from domain.variants import MAX_VARIANTS, MIN_VARIANTS
from services.errors import Conflict, Invalid
from services.journeys import BROADCAST_GIVE_UP_SECONDS, Journeys
from storage.campaign_status import mark_broadcast, set_status
from storage.models import Campaign, Step, Template, utcnow
from storage.versions import record_live

Loc = list[str | int]

# status -> statuses it may move to
TRANSITIONS: dict[CampaignStatus, set[CampaignStatus]] = {
    CampaignStatus.DRAFT: {CampaignStatus.ACTIVE, CampaignStatus.ARCHIVED},
    CampaignStatus.ACTIVE: {CampaignStatus.PAUSED, CampaignStatus.ARCHIVED},
    CampaignStatus.PAUSED: {CampaignStatus.ACTIVE, CampaignStatus.ARCHIVED},
    CampaignStatus.ARCHIVED: set(),
}


def steps_of(session: Session, campaign_id: int) -> list[Step]:
    return list(
        session.exec(
            select(Step).where(Step.campaign_id == campaign_id).order_by(col(Step.step_order))
        )
    )


def check_transition(session: Session, campaign: Campaign, new: CampaignStatus) -> bool:
    """Whether `new` changes the status; Conflict when it may not follow the current one."""
    if new == campaign.status:
        return False
    if new not in TRANSITIONS[CampaignStatus(campaign.status)]:
        raise Conflict(f"campaign {campaign.id} cannot go from {campaign.status} to {new}")
    if new == CampaignStatus.ACTIVE and not steps_of(session, campaign.id or 0):
        raise Conflict(f"campaign {campaign.id} has no steps to run")
    return True


def require_draft(campaign: Campaign) -> None:
    if campaign.status != CampaignStatus.DRAFT:
        raise Conflict(
            f"campaign {campaign.id} is {campaign.status}: steps change only while it is a draft "
            "(running journeys are pinned to the plan they started with); clone it to edit"
        )


def check_template(session: Session, loc: Loc, template_id: int) -> None:
    if session.get(Template, template_id) is None:
        raise Invalid(loc, f"template {template_id} does not exist")


def apply_step(
    session: Session, step: Step, changes: Mapping[str, Any], loc: Loc, earlier: dict[int, Step]
) -> None:
    """Validate and copy a step's fields (only those given in `changes`; `condition` and
    `alternative` as mappings or None) onto `step`. `earlier` maps step_order -> step for the
    steps before it; a condition must name one of them."""
    if changes.get("subject") is not None:
        step.subject = changes["subject"]
    if changes.get("delay_hours") is not None:
        step.delay_hours = changes["delay_hours"]
    if changes.get("template_id") is not None:
        check_template(session, [*loc, "template_id"], changes["template_id"])
        step.template_id = changes["template_id"]
    if "condition" in changes:
        _apply_condition(session, step, changes["condition"], [*loc, "condition"], earlier)
    if "alternative" in changes:
        alternative = changes["alternative"]
        if alternative is not None:
            if not step.condition_type:
                raise Invalid([*loc, "alternative"], "an alternative needs a condition")
            template_id = alternative["template_id"]
            check_template(session, [*loc, "alternative", "template_id"], template_id)
            step.alt_subject, step.alt_template_id = alternative["subject"], template_id
        else:
            step.alt_subject, step.alt_template_id = None, None
    if not step.condition_type and step.alt_template_id is not None:
        raise Invalid([*loc, "alternative"], "an alternative needs a condition")
    _apply_timing(step, changes, loc)
    _apply_variants(session, step, changes, loc)


def _apply_timing(step: Step, changes: Mapping[str, Any], loc: Loc) -> None:
    """A step's send window (or none: ignore_send_window) and delay_until."""
    if "send_window" in changes:
        step.send_window = changes["send_window"]
    if changes.get("ignore_send_window") is not None:
        step.ignore_send_window = changes["ignore_send_window"]
    if "delay_until" in changes:
        until = changes["delay_until"]
        step.delay_until_field = until["field"] if until else None
        step.delay_until_offset_hours = until.get("offset_hours", 0) if until else 0
    if step.delay_until_field is not None and step.delay_hours:
        raise Invalid(
            [*loc, "delay_until"],
            "a step is due either after delay_hours or at delay_until: set delay_hours to 0",
        )
    if step.ignore_send_window and step.send_window is not None:
        raise Invalid(
            [*loc, "ignore_send_window"], "a step with its own send_window cannot ignore it"
        )


def _apply_variants(session: Session, step: Step, changes: Mapping[str, Any], loc: Loc) -> None:
    """A step's A/B variants (2-4 that send, at most one holdout, distinct names, templates
    that exist) and its winner rule, which needs variants."""
    if "variants" in changes:
        variants = changes["variants"]
        if variants is not None:
            where = [*loc, "variants"]
            sending = [v for v in variants if not v.get("holdout")]
            if not MIN_VARIANTS <= len(sending) <= MAX_VARIANTS:
                raise Invalid(
                    where,
                    f"a split test has {MIN_VARIANTS} to {MAX_VARIANTS} variants that send "
                    f"(and at most one holdout): {len(sending)} given",
                )
            if len(variants) - len(sending) > 1:
                raise Invalid(where, "at most one holdout")
            names = [v["name"] for v in variants]
            if len(set(names)) != len(names):
                raise Invalid(where, f"variant names must differ: {names}")
            for index, variant in enumerate(variants):
                if variant.get("template_id") is not None:
                    check_template(session, [*where, index, "template_id"], variant["template_id"])
            variants = [{k: v for k, v in variant.items() if v is not None and v is not False}
                        for variant in variants]  # fmt: skip
        step.variants = variants
    if "winner" in changes:
        step.winner = changes["winner"]
    if step.winner is not None and not step.variants:
        raise Invalid([*loc, "winner"], "a winner is chosen among variants: add variants")


TIMING_FIELDS = ("send_window", "frequency_cap", "on_cap")


def _apply_condition(
    session: Session,
    step: Step,
    condition: Mapping[str, Any] | None,
    loc: Loc,
    earlier: dict[int, Step],
) -> None:
    if condition is None:
        step.condition_type = step.condition_step_id = step.condition_url = None
        step.condition_event = step.condition_where = step.condition_match = None
        step.condition_wait_hours = None
        return
    kind = ConditionType(condition["type"])
    step.condition_wait_hours = condition.get("wait_hours")
    if kind in PRODUCT_CONDITIONS:
        if condition.get("match"):
            campaign = session.get(Campaign, step.campaign_id)
            if campaign is None or campaign.trigger_event is None:
                raise Invalid(
                    [*loc, "match"],
                    "match compares with the event that enrolled the journey: "
                    "the campaign needs a trigger",
                )
        step.condition_type = kind.value
        step.condition_step_id = step.condition_url = None
        step.condition_event = condition["event"]
        step.condition_where = condition.get("where")
        step.condition_match = condition.get("match")
        return
    step.condition_event = step.condition_where = step.condition_match = None
    step_order, step_id = condition.get("step_order"), condition.get("step_id")
    if step_order is not None:
        target = earlier.get(step_order)
        if target is None:
            raise Invalid(
                [*loc, "step_order"],
                f"step_order {step_order} is not an earlier step of this campaign",
            )
    else:
        target = next((s for s in earlier.values() if s.id == step_id), None)
        if target is None:
            raise Invalid(
                [*loc, "step_id"], f"step {step_id} is not an earlier step of this campaign"
            )
    step.condition_type = kind.value
    step.condition_step_id = target.id
    step.condition_url = condition.get("url")


def check_order(campaign_id: int, steps: dict[int, Step], step_ids: list[int]) -> list[Step]:
    """The steps in the order asked: every step once, each after the step its condition names."""
    if sorted(step_ids) != sorted(steps):
        raise Invalid(
            ["body", "step_ids"],
            f"must list each step of campaign {campaign_id} once: {sorted(steps)}",
        )
    ordered = [steps[i] for i in step_ids]
    position = {s.id: n for n, s in enumerate(ordered)}
    for n, step in enumerate(ordered):
        if step.condition_step_id is not None and position[step.condition_step_id] >= n:
            raise Invalid(
                ["body", "step_ids"],
                f"step {step.id} has a condition on step {step.condition_step_id}, "
                "which must come before it",
            )
    return ordered


def renumber(session: Session, ordered: list[Step]) -> None:
    for n, step in enumerate(ordered, start=1):
        step.step_order = n
        session.add(step)


# The journey definition's parts of a campaign, as the API gives them (objects or None).
DEFINITION = ("trigger", "goal", "reentry")
# ... and the columns that store them: what a clone copies.
DEFINITION_COLUMNS = (
    "trigger_event",
    "trigger_where",
    "goal_event",
    "goal_where",
    "goal_window_hours",
    "goal_exit",
    "reentry_allowed",
    "reentry_cooldown_hours",
)


def apply_definition(session: Session, campaign: Campaign, changes: Mapping[str, Any]) -> None:
    """Copy the trigger, goal and re-entry given in `changes` (objects, or None to remove one)
    onto the campaign's columns. Steps that `match` on the trigger event keep it required."""
    if "trigger" in changes:
        trigger = changes["trigger"] or {}
        campaign.trigger_event, campaign.trigger_where = trigger.get("event"), trigger.get("where")
        if campaign.trigger_event is None:
            matching = [
                s.step_order for s in steps_of(session, campaign.id or 0) if s.condition_match
            ]
            if matching:
                raise Invalid(
                    ["body", "trigger"],
                    f"step {matching[0]} matches on the trigger event's properties: "
                    "remove its match first",
                )
    if "goal" in changes:
        goal = changes["goal"] or {}
        campaign.goal_event, campaign.goal_where = goal.get("event"), goal.get("where")
        campaign.goal_window_hours, campaign.goal_exit = (
            goal.get("window_hours"),
            goal.get("exit", True),
        )
    if "reentry" in changes:
        reentry = changes["reentry"] or {}
        campaign.reentry_allowed = reentry.get("allowed", False)
        campaign.reentry_cooldown_hours = reentry.get("cooldown_hours", 0)


def update(session: Session, campaign: Campaign, changes: dict[str, Any]) -> CampaignChange | None:
    """Apply a PATCH (name, sender fields, the definition on a draft, status) in one
    transaction; return the status change the running journeys must hear of, if any."""
    definition = {key: changes.pop(key) for key in DEFINITION if key in changes}
    if definition:
        if campaign.status != CampaignStatus.DRAFT:
            raise Conflict(
                f"campaign {campaign.id} is {campaign.status}: its trigger, goal and re-entry "
                "change only while it is a draft (running journeys are pinned to the plan they "
                "started with); clone it to edit"
            )
        apply_definition(session, campaign, definition)
    new_status = changes.pop("status", None)
    if new_status is None or not check_transition(session, campaign, new_status):
        new_status = None
    if campaign.status != CampaignStatus.DRAFT and any(k in changes for k in TIMING_FIELDS):
        raise Conflict(
            f"campaign {campaign.id} is {campaign.status}: its send window and frequency cap "
            "change only while it is a draft (running journeys are pinned to the plan they "
            "started with); clone it to edit"
        )
    for key, value in changes.items():
        if key == "name" and value is None:
            raise Invalid(["body", "name"], "name cannot be empty")
        setattr(campaign, key, value)
    campaign.updated_at = utcnow()
    session.add(campaign)
    change = None
    if new_status is not None:
        was = campaign.status
        set_status(session, campaign, CampaignStatus(new_status))
        if was == CampaignStatus.DRAFT:  # no journey runs yet: nobody to tell
            campaign.broadcast_version = campaign.status_version
            record_live(session, campaign, campaign.updated_at)  # its first version
        else:
            change = CampaignChange(CampaignStatus(new_status), campaign.status_version)
    session.commit()
    return change


async def tell_journeys(
    engine: Engine,
    journeys: Journeys,
    campaign_id: int,
    change: CampaignChange,
    patience: float = BROADCAST_GIVE_UP_SECONDS,
) -> bool:
    """Broadcast a status change to the campaign's running journeys and record it as told;
    if it does not go through, the outbox tries again."""
    told = await journeys.broadcast(campaign_id, change, patience)
    if told:
        await asyncio.to_thread(mark_broadcast, engine, campaign_id, change.version)
    return told
