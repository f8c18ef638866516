"""`drip plan` / `drip apply`: make the API's campaign and templates what a campaign file says.

The plan compares the file with what the API holds: templates by name (created, or their html
and text updated), the campaign by `id:` or by name (created, or its name, sender fields,
trigger, goal and re-entry edited), and its steps by position (edited, added, removed). Steps,
trigger, goal and re-entry change only while the campaign is a draft: for a live (active/paused)
campaign a plan that changes them is blocked, and `apply` refuses it before doing anything; the
plan then previews what publishing the file as the campaign's next version would do to the
journeys in flight, for each policy (`POST .../versions/preview`: nothing is stored). Applying a
plan, then planning again, finds no changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cli.campaign_file import CampaignFile
from cli.client import ApiClient

SENDER_FIELDS = ("name", "from_email", "from_name", "reply_to")
STEP_FIELDS = (
    "subject",
    "delay_hours",
    "template_id",
    "condition",
    "alternative",
    "delay_until",
    "send_window",
    "ignore_send_window",
    "variants",
    "winner",
)
LIVE = ("active", "paused")
POLICIES = ("stay", "migrate", "exit")
# The campaign fields that define its journeys: changed only on a draft, like its steps.
DEFINITION = {"trigger", "goal", "reentry", "send_window", "frequency_cap", "on_cap"}


class PlanError(ValueError):
    """The file cannot be applied to what the API holds (an unknown id, an ambiguous name)."""


@dataclass
class TemplateChange:
    key: str
    body: dict[str, Any]
    id: int | None = None  # None: to be created
    changed: list[str] = field(default_factory=list)


@dataclass
class StepChange:
    action: str  # add | edit | remove
    order: int
    body: dict[str, Any]
    id: int | None = None
    changed: list[str] = field(default_factory=list)


@dataclass
class Plan:
    spec: CampaignFile
    campaign: dict[str, Any] | None  # None: to be created
    templates: list[TemplateChange]
    fields: dict[str, tuple[Any, Any]]  # name -> (now, then)
    steps: list[StepChange]
    activate: bool
    template_ids: dict[str, int]  # file key -> id, of the templates that exist
    blocked: str | None = None  # why this plan cannot be applied
    # A live campaign's changed definition: the publish impact per policy, as a version would
    # make it (None: nothing to preview); `unpreviewed`: why there is no preview.
    impacts: dict[str, dict[str, Any]] | None = None
    unpreviewed: str | None = None
    version_ids: list[int | None] = field(default_factory=list)  # the version's steps, in order

    @property
    def changes(self) -> bool:
        return bool(
            self.campaign is None or self.templates or self.fields or self.steps or self.activate
        )

    def describe(self) -> list[str]:
        if not self.changes:
            return ["no changes"]
        lines = []
        for t in self.templates:
            if t.id is None:
                lines.append(f"+ template {t.body['name']!r} created")
            else:
                lines.append(
                    f"~ template {t.body['name']!r} (id {t.id}) updated: {', '.join(t.changed)}"
                )
        if self.campaign is None:
            lines.append(f"+ campaign {self.spec.name!r} created with {len(self.spec.steps)} steps")
        else:
            c = self.campaign
            lines.append(f"campaign {c['id']} {c['name']!r} ({c['status']}):")
            lines += [f"  ~ {k}: {now!r} -> {then!r}" for k, (now, then) in self.fields.items()]
            for s in self.steps:
                if s.action == "add":
                    lines.append(f"  + step {s.order} added: {s.body['subject']!r}")
                elif s.action == "edit":
                    lines.append(f"  ~ step {s.order} (id {s.id}) edited: {', '.join(s.changed)}")
                else:
                    lines.append(f"  - step {s.order} (id {s.id}) removed: {s.body['subject']!r}")
        if self.activate:
            lines.append("  > campaign activated")
        if self.unpreviewed:
            lines.append(f"  (no publish preview: {self.unpreviewed})")
        if self.impacts is not None and self.campaign is not None:
            lines.append("  published as a new version, the journeys in flight would:")
            for policy, impact in self.impacts.items():
                line = _impact_line(impact, self.campaign["steps"], self.version_ids)
                lines.append(f"    {policy}: {line}")
        if self.blocked:
            lines.append(f"cannot apply: {self.blocked}")
        return lines


def make_plan(
    client: ApiClient, spec: CampaignFile, template_bodies: dict[str, dict[str, Any]]
) -> Plan:
    templates, template_ids = _plan_templates(client, template_bodies)
    campaign = _find_campaign(client, spec)
    wanted = spec.step_bodies(template_ids)
    if campaign is None:
        return Plan(spec, None, templates, {}, [], spec.activate, template_ids)
    fields = {k: (campaign.get(k), v) for k, v in spec.fields().items() if campaign.get(k) != v}
    steps = _plan_steps(campaign["steps"], wanted)
    activate = spec.activate and campaign["status"] == "draft"  # a paused one stays paused
    plan = Plan(spec, campaign, templates, fields, steps, activate, template_ids)
    if campaign["status"] == "archived" and (fields or steps):
        plan.blocked = f"campaign {campaign['id']} is archived: it cannot change"
    elif campaign["status"] in LIVE and DEFINITION & fields.keys():
        plan.blocked = (
            f"campaign {campaign['id']} is {campaign['status']}: its "
            f"{', '.join(sorted(DEFINITION & fields.keys()))} cannot change (they change only "
            "while it is a draft): `drip campaign clone` it and apply to the draft copy "
            "(`id:` in the file)"
        )
    elif campaign["status"] in LIVE and steps:
        plan.blocked = (
            f"campaign {campaign['id']} is {campaign['status']}: its steps cannot change "
            "(running journeys are pinned to the steps they started with; publish live "
            "changes as a new version with `drip versions draft|edit|publish`). Only its name "
            "and sender fields can: keep the steps as they are, or `drip campaign clone` it "
            "and apply to the draft copy (`id:` in the file)"
        )
    if campaign["status"] in LIVE and (steps or DEFINITION & fields.keys()):
        _preview(client, plan, wanted)
    return plan


def _preview(client: ApiClient, plan: Plan, wanted: list[dict[str, Any]]) -> None:
    """The publish impact of the file as the campaign's next version: its steps matched to the
    live ones by position (as the plan's step lines say), for each policy; nothing stored."""
    assert plan.campaign is not None
    if any(body["template_id"] is None for body in wanted):
        plan.unpreviewed = "a step's template does not exist yet"
        return
    existing = plan.campaign["steps"]
    plan.version_ids = [
        existing[i]["id"] if i < len(existing) else None for i in range(len(wanted))
    ]
    steps = [
        {**body, "id": step_id} if step_id is not None else body
        for body, step_id in zip(wanted, plan.version_ids, strict=True)
    ]
    fields = plan.spec.fields()
    definition = {"steps": steps, **{k: fields[k] for k in sorted(DEFINITION)}}
    path = f"/api/campaigns/{plan.campaign['id']}/versions/preview"
    plan.impacts = {
        policy: client.post(path, {"definition": definition, "policy": policy})
        for policy in POLICIES
    }


def _impact_line(impact: dict[str, Any], live: list[dict[str, Any]], kept: list[int | None]) -> str:
    """One policy's impact: the live steps by their order now, where they go by the order in
    the new version (a step the version adds has no id yet)."""
    now = {s["id"]: s["step_order"] for s in live}
    then = {step_id: order for order, step_id in enumerate(kept, start=1) if step_id is not None}

    def to(step_id: int | None) -> str:
        if step_id is None:
            return "the end (they finish)"
        return f"new step {then[step_id]}" if step_id in then else "an added step"

    waiting = ", ".join(
        f"{c['count']} before step {now.get(c['step_id'], '?')}" for c in impact["waiting_before"]
    )
    parts = [f"{impact['in_flight']} in flight", f"waiting: {waiting or 'none'}"]
    if impact["policy"] == "migrate":
        moves = ", ".join(
            f"{m['count']} from step {now.get(m['from_step'], '?')} to {to(m['to_step'])}"
            for m in impact["moves"]
        )
        parts.append(f"moves: {moves or 'none'}")
    elif impact["policy"] == "stay":
        parts.append("they finish the version they started on")
    parts.append(f"{impact['exits']} exit")
    return "; ".join(parts)


def _plan_templates(
    client: ApiClient, bodies: dict[str, dict[str, Any]]
) -> tuple[list[TemplateChange], dict[str, int]]:
    existing: dict[str, dict[str, Any]] = {}
    for t in client.get("/api/templates"):
        existing.setdefault(t["name"], t)  # the oldest of that name
    changes, ids = [], {}
    for key, body in bodies.items():
        now = existing.get(body["name"])
        if now is None:
            changes.append(TemplateChange(key, body))
            continue
        ids[key] = now["id"]
        changed = [part for part in ("html", "text") if now.get(part) != body.get(part)]
        if changed:
            changes.append(TemplateChange(key, body, now["id"], changed))
    return changes, ids


def _find_campaign(client: ApiClient, spec: CampaignFile) -> dict[str, Any] | None:
    if spec.id is not None:
        from cli.client import ApiError

        try:
            return client.get(f"/api/campaigns/{spec.id}")  # type: ignore[no-any-return]
        except ApiError as exc:
            if exc.status == 404:
                raise PlanError(f"campaign {spec.id} (`id:` in the file) does not exist") from None
            raise
    named = [
        c
        for c in client.get("/api/campaigns")
        if c["name"] == spec.name and c["status"] != "archived"
    ]
    if len(named) > 1:
        ids = ", ".join(str(c["id"]) for c in named)
        raise PlanError(f"campaigns {ids} are all named {spec.name!r}: say which with `id:`")
    return client.get(f"/api/campaigns/{named[0]['id']}") if named else None


def _plan_steps(existing: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> list[StepChange]:
    order_of = {s["id"]: s["step_order"] for s in existing}
    changes = []
    for order, body in enumerate(wanted, start=1):
        if order > len(existing):
            changes.append(StepChange("add", order, body))
            continue
        now = _as_body(existing[order - 1], order_of)
        changed = [k for k in STEP_FIELDS if now[k] != body[k]]
        if changed:
            changes.append(StepChange("edit", order, body, existing[order - 1]["id"], changed))
    for step in reversed(existing[len(wanted) :]):  # from the last: nothing after depends on it
        changes.append(StepChange("remove", step["step_order"], step, step["id"]))
    return changes


def _as_body(step: dict[str, Any], order_of: dict[int, int]) -> dict[str, Any]:
    """An existing step in the shape of the file's step bodies (a condition by position)."""
    condition = step.get("condition")
    if condition:
        condition = {
            "type": condition["type"],
            "step_order": order_of.get(condition.get("step_id")),
            **{k: condition.get(k) for k in ("url", "event", "where", "match", "wait_hours")},
        }
        condition = {k: v for k, v in condition.items() if v is not None}
    return {
        "subject": step["subject"],
        "delay_hours": step["delay_hours"],
        "template_id": step["template_id"],
        "condition": condition or None,
        "alternative": step.get("alternative"),
        "delay_until": step.get("delay_until"),
        "send_window": step.get("send_window"),
        "ignore_send_window": bool(step.get("ignore_send_window")),
        "variants": step.get("variants"),
        "winner": {k: step["winner"][k] for k in ("metric", "after_hours")}  # not the choice
        if step.get("winner")
        else None,
    }


def apply(client: ApiClient, plan: Plan, template_bodies: dict[str, dict[str, Any]]) -> int:
    """Carry the plan out; returns the campaign's id."""
    assert plan.blocked is None
    created = False
    for t in plan.templates:
        if t.id is None:
            client.post("/api/templates", t.body)
            created = True
        else:
            client.patch(f"/api/templates/{t.id}", {k: t.body.get(k) for k in t.changed})
    if created:  # steps named templates that did not exist yet: their ids are known now
        plan = make_plan(client, plan.spec, template_bodies)
    if plan.campaign is None:
        steps = plan.spec.step_bodies(plan.template_ids)
        campaign_id: int = client.post("/api/campaigns", {**plan.spec.fields(), "steps": steps})[
            "id"
        ]
    else:
        campaign_id = plan.campaign["id"]
        changes = {k: then for k, (_, then) in plan.fields.items()}
        # A trigger goes only after the steps that match on its event have let go of it.
        later = {"trigger": None} if "trigger" in changes and changes["trigger"] is None else {}
        changes = {k: v for k, v in changes.items() if k not in later}
        if changes:
            client.patch(f"/api/campaigns/{campaign_id}", changes)
        for s in plan.steps:
            if s.action == "add":
                client.post("/api/campaigns/steps", s.body, campaign_id=campaign_id)
            elif s.action == "edit":
                client.patch(f"/api/campaigns/steps/{s.id}", {k: s.body[k] for k in s.changed})
            else:
                client.delete(f"/api/campaigns/steps/{s.id}")
        if later:
            client.patch(f"/api/campaigns/{campaign_id}", later)
    if plan.activate:
        client.patch(f"/api/campaigns/{campaign_id}", {"status": "active"})
    return campaign_id
