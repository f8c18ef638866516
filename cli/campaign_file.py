"""A campaign described in one YAML file, for `drip apply` / `drip plan` (and
`drip campaign create`). Its shape is the pydantic model `CampaignFile`; `drip schema` prints its
JSON Schema for editor completion (committed as docs/campaign.schema.json).

```yaml
# yaml-language-server: $schema=campaign.schema.json
name: Onboarding                  # matches the campaign of that name (or give its `id:`)
from_email: hello@example.com     # optional, like from_name and reply_to
activate: true                    # optional: start it once applied (default: stays a draft)
templates:                        # a key each, used by the steps below
  welcome:
    name: Welcome                 # optional: the template's name in drip (default: the key)
    html: "<p>Hi {{ first_name | default('there') }}</p>"
    text: "Hi!"                   # optional
  reminder:
    html_file: reminder.html      # or from a file, relative to this one
steps:
  - subject: Welcome aboard
    delay_hours: 0
    template: welcome
  - subject: Still interested?
    delay_hours: 48
    template: reminder
    condition: {type: not_opened, step_order: 1}   # on an earlier step, by its position
    alternative: {subject: Glad you're here, template: welcome}
  - subject: Your trial ends soon
    delay_hours: 24
    template: reminder
    # on a tracked product event since enrollment, waiting up to 48 h for it to happen
    condition: {type: not_performed, event: plan.upgraded, where: {plan: pro}, wait_hours: 48}
trigger: {event: trial.started}   # optional: each such tracked event enrolls its person
goal: {event: plan.upgraded, window_hours: 72}   # optional: conversions; ends the journey
reentry: {allowed: true, cooldown_hours: 720}   # optional: enter again after the cooldown
send_window:                      # optional: when messages may go out (docs/features.md)
  {days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00",
   timezone: recipient, fallback_timezone: America/New_York}
```

Checked here: the shape and the names a human wrote; the API judges the rest (a template's
Jinja, a sender address) and names the offending field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

Text = Annotated[str, Field(min_length=1, max_length=1000)]


class CampaignFileError(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TemplateSpec(_Strict):
    """A template, matched in drip by its name: created, or updated to this content."""

    name: Text | None = Field(None, description="its name in drip; default: its key in the file")
    html: str | None = Field(None, min_length=1, description="Jinja2 HTML source")
    html_file: str | None = Field(None, description="or the HTML from this file (relative path)")
    text: str | None = Field(None, description="Jinja2 plain-text source (optional)")
    text_file: str | None = Field(None, description="or the text from this file")

    @model_validator(mode="after")
    def _one_source(self) -> TemplateSpec:
        if (self.html is None) == (self.html_file is None):
            raise ValueError("give exactly one of html or html_file")
        if self.text is not None and self.text_file is not None:
            raise ValueError("give at most one of text or text_file")
        return self


PRODUCT = ("performed", "not_performed")
Properties = dict[str, str | int | float | bool | None]


class ConditionSpec(_Strict):
    """Send this step only if the recipient did (not) open/click an earlier step, or did (not)
    perform a tracked product event since enrollment; optionally waiting until it settles."""

    type: Literal["opened", "not_opened", "clicked", "not_clicked", "performed", "not_performed"]
    step_order: int | None = Field(
        None,
        ge=1,
        description="opened/clicked types: the earlier step, by its position (1 = first)",
    )
    url: str | None = Field(None, min_length=1, description="clicked/not_clicked: this link only")
    event: str | None = Field(
        None, min_length=1, max_length=128, description="performed/not_performed: the event name"
    )
    where: Properties | None = Field(None, description="property values the event must have")
    match: list[str] | None = Field(
        None,
        min_length=1,
        description="properties equal to those of the event that enrolled (needs a trigger)",
    )
    wait_hours: float | None = Field(
        None, gt=0, description="once the step is due, wait up to this long for it to settle"
    )

    @model_validator(mode="after")
    def _kind(self) -> ConditionSpec:
        if self.type in PRODUCT:
            if self.event is None or self.step_order is not None:
                raise ValueError(f"a {self.type} condition names an event, not a step_order")
        elif self.step_order is None or self.event or self.where or self.match:
            raise ValueError(f"a {self.type} condition names a step_order (and no event)")
        return self


class TriggerSpec(_Strict):
    """Each tracked event of this name (and `where`) enrolls its person while the campaign is
    active."""

    event: str = Field(min_length=1, max_length=128)
    where: Properties | None = None


class GoalSpec(_Strict):
    """The tracked event that fulfils the campaign: a conversion within `window_hours` of the
    last message; with `exit` (default) it ends the journey, converted."""

    event: str = Field(min_length=1, max_length=128)
    where: Properties | None = None
    window_hours: float = Field(gt=0)
    exit: bool = True


class ReentrySpec(_Strict):
    """Let a person enter again once their journey ended and the cooldown passed."""

    allowed: bool
    cooldown_hours: float = Field(0, ge=0)


class AlternativeSpec(_Strict):
    """Sent instead when the condition fails."""

    subject: Text
    template: str = Field(description="a key of `templates`")


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class SendWindowSpec(_Strict):
    """When messages may go out: on `days`, `start`-`end` wall clock (start after end crosses
    midnight), in an IANA `timezone` or `recipient` (their `timezone` field, else
    `fallback_timezone`)."""

    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(min_length=1)
    start: str = Field(pattern=r"^\d\d:\d\d$", description="HH:MM")
    end: str = Field(pattern=r"^\d\d:\d\d$", description="HH:MM")
    timezone: str = Field(description="an IANA zone (Europe/Berlin) or `recipient`")
    fallback_timezone: str | None = Field(None, description="required with `recipient`")

    @field_validator("days")
    @classmethod
    def _in_week_order(cls, value: list[str]) -> list[str]:
        return sorted(set(value), key=DAYS.index)  # as the API stores them


class DelayUntilSpec(_Strict):
    """Due at the date in a recipient field, plus `offset_hours` (instead of delay_hours)."""

    field: Text
    offset_hours: float = 0


class VariantSpec(_Strict):
    """One variant of a split-tested step (its own subject and template), or with `holdout:
    true` a share sent nothing but measured."""

    name: str = Field(min_length=1, max_length=64)
    subject: Text | None = None
    template: str | None = Field(None, description="a key of `templates`")
    weight: float = Field(gt=0, description="its share of the journeys (a proportion)")
    holdout: bool = False


class WinnerSpec(_Strict):
    """Choose the best variant by `metric`, `after_hours` after the step's first send."""

    metric: Literal["open_rate", "click_rate", "conversion_rate"]
    after_hours: float = Field(gt=0)


class StepSpec(_Strict):
    subject: Text = Field(description="Jinja2 subject line")
    delay_hours: float = Field(
        0, ge=0, description="hours after the previous step (or enrollment); 0 with delay_until"
    )
    template: str = Field(description="a key of `templates`")
    condition: ConditionSpec | None = None
    alternative: AlternativeSpec | None = None
    delay_until: DelayUntilSpec | None = None
    send_window: SendWindowSpec | None = Field(None, description="instead of the campaign's")
    ignore_send_window: bool = Field(False, description="send whenever due, whatever the window")
    variants: list[VariantSpec] | None = Field(None, description="an A/B test: 2-4 and a holdout")
    winner: WinnerSpec | None = None


class CampaignFile(_Strict):
    """A campaign, its steps and the templates they use: what `drip apply` makes true."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    id: int | None = Field(None, description="the campaign to apply to; default: matched by name")
    name: Text
    from_email: str | None = None
    from_name: str | None = None
    reply_to: str | None = None
    activate: bool = Field(False, description="start the campaign once applied")
    trigger: TriggerSpec | None = None
    goal: GoalSpec | None = None
    reentry: ReentrySpec | None = None
    templates: dict[str, TemplateSpec] = Field(default_factory=dict)
    steps: list[StepSpec] = Field(default_factory=list, max_length=100)
    send_window: SendWindowSpec | None = None
    frequency_cap: Literal["apply", "exempt"] = Field(
        "apply", description="`exempt`: never held by the frequency cap, never counted"
    )
    on_cap: Literal["defer", "skip"] = Field(
        "defer", description="a step the cap holds back waits for a slot, or is skipped"
    )

    @model_validator(mode="after")
    def _references(self) -> CampaignFile:
        for number, step in enumerate(self.steps, start=1):
            refs = [("template", step.template)]
            refs += [("variants.template", v.template) for v in step.variants or [] if v.template]
            if step.alternative is not None:
                refs.append(("alternative.template", step.alternative.template))
                if step.condition is None:
                    raise ValueError(f"step {number}: an alternative needs a condition")
            for where, key in refs:
                if key not in self.templates:
                    raise ValueError(
                        f"step {number} {where} {key!r} is not one of the templates "
                        f"{sorted(self.templates)}"
                    )
            condition = step.condition
            if condition is not None and (condition.step_order or 0) >= number:
                raise ValueError(f"step {number}: the condition must name an earlier step_order")
            if condition is not None and condition.match and self.trigger is None:
                raise ValueError(f"step {number}: a condition's match needs the campaign's trigger")
        return self

    def template_bodies(self, base: Path) -> dict[str, dict[str, Any]]:
        """key -> the body of POST /api/templates, files read relative to `base`."""
        bodies = {}
        for key, spec in self.templates.items():
            body: dict[str, Any] = {"name": spec.name or key}
            for part in ("html", "text"):
                source = getattr(spec, f"{part}_file")
                if source is not None:
                    try:
                        body[part] = (base / source).read_text(encoding="utf-8")
                    except OSError as exc:
                        raise CampaignFileError(f"template {key!r}: {exc}") from exc
                else:
                    body[part] = getattr(spec, part)
            bodies[key] = body
        return bodies

    def step_bodies(self, template_ids: dict[str, int]) -> list[dict[str, Any]]:
        """The steps as the API takes them, every template key replaced by its id."""
        bodies = []
        for step in self.steps:
            body: dict[str, Any] = {
                "subject": step.subject,
                "delay_hours": step.delay_hours,
                "template_id": template_ids.get(step.template),
                "condition": step.condition.model_dump(exclude_none=True)
                if step.condition
                else None,
                "alternative": {
                    "subject": step.alternative.subject,
                    "template_id": template_ids.get(step.alternative.template),
                }
                if step.alternative
                else None,
                "delay_until": step.delay_until.model_dump() if step.delay_until else None,
                "send_window": step.send_window.model_dump() if step.send_window else None,
                "ignore_send_window": step.ignore_send_window,
                "variants": [_variant_body(v, template_ids) for v in step.variants]
                if step.variants
                else None,
                "winner": step.winner.model_dump() if step.winner else None,
            }
            bodies.append(body)
        return bodies

    def fields(self) -> dict[str, Any]:
        """The campaign's own fields, as the API shows them (a trigger, goal or re-entry in full,
        None when unset; re-entry not allowed is the default)."""
        fields = {k: getattr(self, k) for k in ("name", "from_email", "from_name", "reply_to")}
        fields["trigger"] = self.trigger.model_dump() if self.trigger else None
        fields["goal"] = self.goal.model_dump() if self.goal else None
        allowed = self.reentry is not None and self.reentry.allowed
        fields["reentry"] = self.reentry.model_dump() if allowed and self.reentry else None
        fields["send_window"] = self.send_window.model_dump() if self.send_window else None
        fields["frequency_cap"], fields["on_cap"] = self.frequency_cap, self.on_cap
        return fields


def _variant_body(variant: VariantSpec, template_ids: dict[str, int]) -> dict[str, Any]:
    """A variant as the API takes and shows it (a holdout: name, weight and holdout only)."""
    if variant.holdout:
        return {"name": variant.name, "weight": variant.weight, "holdout": True}
    return {
        "name": variant.name,
        "subject": variant.subject,
        "template_id": template_ids.get(variant.template or ""),
        "weight": variant.weight,
    }


def load(path: Path) -> tuple[CampaignFile, dict[str, dict[str, Any]]]:
    """The file's campaign and its template bodies; CampaignFileError naming what is wrong."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CampaignFileError(f"{path}: {exc}") from exc
    try:
        spec = CampaignFile.model_validate(data)
    except ValidationError as exc:
        raise CampaignFileError(f"{path}: {_problems(exc)}") from None
    try:
        return spec, spec.template_bodies(path.parent)
    except CampaignFileError as exc:
        raise CampaignFileError(f"{path}: {exc}") from None


def _problems(exc: ValidationError) -> str:
    def one(error: Any) -> str:
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        return f"{where}: {message}" if where else message

    return "; ".join(one(e) for e in exc.errors())


def json_schema() -> str:
    return json.dumps(CampaignFile.model_json_schema(), indent=2) + "\n"
