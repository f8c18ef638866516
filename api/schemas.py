"""Request and response bodies. The three spec endpoints use exactly the spec's fields."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import FastAPI
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    field_validator,
    model_validator,
)

from domain.journey import (
    PRODUCT_CONDITIONS,
    ConditionType,
    Decision,
    EventType,
    JourneyStatus,
    WaitingKind,
)
from domain.timing import DAYS, RECIPIENT_ZONE, parse_clock, zone_or_none
from domain.webhooks_out import JourneyEventType
from mail.headers import check_address, check_display_name
from mail.render import check_template
from services.enrollment_batches import Accepted
from storage.models import Enrollment, EnrollmentBatch, EnrollmentBatchRow


def _spec_time(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _whole_as_int(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


SpecTime = Annotated[datetime, PlainSerializer(_spec_time, return_type=str)]
Hours = Annotated[
    float,
    Field(
        ge=0,
        strict=True,
        allow_inf_nan=False,
        le=24 * 365 * 10,
        description="hours after the previous step",
    ),
    PlainSerializer(_whole_as_int, return_type=int | float),
]
Text = Annotated[str, Field(min_length=1, max_length=1000)]


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("an event name is printable characters only")
    return value


# A number of hours (fractions allowed, never a string or a boolean), shown whole as an int.
AnyHours = Annotated[
    float,
    Field(strict=True, allow_inf_nan=False, le=24 * 365 * 10),
    PlainSerializer(_whole_as_int, return_type=int | float),
]


# A tracked product event's name (POST /api/track), e.g. `trial.started`, `Order Completed`.
EventName = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_printable)]
PropertyName = Annotated[str, Field(min_length=1, max_length=100)]
# Property values an event must have, each equal: `{"plan": "pro"}`.
Where = Annotated[
    dict[PropertyName, str | int | float | bool | None],
    Field(max_length=50, description="property values the event must have, each equal"),
]
WaitHours = Annotated[
    AnyHours,
    Field(gt=0, description="once the step is due, wait up to this long for it to settle"),
]
WindowHours = Annotated[
    AnyHours, Field(gt=0, description="a conversion counts within this of the last message")
]
CooldownHours = Annotated[AnyHours, Field(ge=0, description="hours after the last journey ended")]


def _subject_template(value: str | None) -> str | None:
    # A subject is a template too: refused at save when it does not compile or overruns the
    # render budget (mail/sandbox.py), like a template's HTML and text.
    if value is not None:
        check_template(value)
    return value


SubjectTemplate = Annotated[Text, AfterValidator(_subject_template)]
# Sender fields go into every message's headers: checked here, or each send would fail for good.
SenderAddress = Annotated[str, Field(max_length=320), AfterValidator(check_address)]
DisplayName = Annotated[str, Field(max_length=200), AfterValidator(check_display_name)]


_T = "2026-12-01T09:00:00Z"


# Examples shared by several schemas (each schema's example is checked valid against it).
_STEP_ENGAGEMENT: dict[str, Any] = {
    "step_id": 1,
    "step_order": 1,
    "decision": "sent",
    "condition_met": None,
    "decided_at": _T,
    "reason": "sent: no condition",
    "evidence": [],
    "delivery_id": "snd_3f2a9c",
    "delivery_status": "sent",
    "sent_at": _T,
    "opened": True,
    "clicked": False,
    "clicked_urls": [],
    "machine_opens": 1,
    "machine_clicks": 0,
}
_DELIVERY: dict[str, Any] = {
    "id": "snd_3f2a9c",
    "campaign_id": 1,
    "step_id": 1,
    "step_order": 1,
    "email": "maya@example.com",
    "status": "uncertain",
    "error": "the connection dropped after the end of DATA",
    "subject": "Welcome, Maya",
    "message_id": "<snd_3f2a9c@drip.example.com>",
    "send_started_at": _T,
    "sent_at": None,
}
_FUNNEL_STEP: dict[str, Any] = {
    "step_id": 1,
    "step_order": 1,
    "subject": "Welcome",
    "reached": 2,
    "sent": 2,
    "alternative_sent": 0,
    "skipped": 0,
    "delivered": 2,
    "opened": 1,
    "clicked": 1,
    "bounced": 0,
    "unsubscribed": 0,
    "complained": 0,
    "opened_including_machine": 2,
    "clicked_including_machine": 1,
    "uncertain": 0,
    "failed": 0,
    "deferred_by_cap": 0,
    "skipped_by_cap": 0,
    "converted": 1,
}
_SUPPRESSION: dict[str, Any] = {
    "email": "maya@example.com",
    "reason": "unsubscribe",
    "source": "link",
    "created_at": _T,
}
_TRIAL_SENT: dict[str, Any] = {
    "step_id": 1,
    "step_order": 1,
    "subject": "Welcome, Maya",
    "message_id": "<test-1@drip.example.com>",
}


def example(value: dict[str, Any]) -> ConfigDict:
    """A model's example in the OpenAPI schema (for docs and generated clients)."""
    return ConfigDict(json_schema_extra={"examples": [value]})


def document_examples(app: FastAPI) -> None:
    """An example on every schema of the OpenAPI document: each model's own, nulls included
    (FastAPI's encoder drops None values from the document, which would leave an example
    without its required nullable fields), and each enum's first value (the enums come from
    domain/, stdlib only, where no schema hook belongs)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schemas = build().get("components", {}).get("schemas", {})
            for name, examples in _model_examples().items():
                if name in schemas:
                    schemas[name]["examples"] = examples
            for schema in schemas.values():
                if schema.get("enum") and "examples" not in schema:
                    schema["examples"] = schema["enum"][:1]
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _model_examples() -> dict[str, Any]:
    """Model name -> its examples, as written with `example()` (plain JSON values)."""
    found = {}
    for name, value in globals().items():
        if isinstance(value, type) and issubclass(value, BaseModel):
            extra = value.model_config.get("json_schema_extra")
            if isinstance(extra, dict) and "examples" in extra:
                found[name] = extra["examples"]
    return found


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- PATCH bodies ------------------------------------------------------------------------------
# An omitted field keeps its value. `null` clears a field that may be empty (a template's text,
# a campaign's from_name, a step's condition); on a required one (a name, a subject) it is a 422
# naming the field, never a NOT NULL error from the database.

T = TypeVar("T")


def _not_null(value: T | None) -> T:
    if value is None:
        raise ValueError("cannot be null: omit the field to keep its current value")
    return value


def _without_null(schema: dict[str, Any]) -> None:
    """Document the field as what it accepts: the value's own type, no `null`."""
    options = [s for s in schema.pop("anyOf", []) if s.get("type") != "null"]
    if len(options) == 1:
        schema.update(options[0])
    schema.pop("default", None)


# `field: Required[Text] = None`: may be omitted, may not be null.
Required = Annotated[T | None, AfterValidator(_not_null), Field(json_schema_extra=_without_null)]


# --- templates -------------------------------------------------------------------------------


class TemplateCreate(Strict):
    """A Jinja2 template: `html`, and optionally `text` (else derived from the HTML)."""

    model_config = example(
        {"name": "welcome", "html": "<p>Hi {{ first_name | default('there') }}</p>"}
    )

    name: Text
    html: Annotated[str, Field(min_length=1, max_length=1_000_000)]
    text: Annotated[str, Field(max_length=1_000_000)] | None = None


class TemplateUpdate(Strict):
    """The template fields to change; the others are kept."""

    model_config = example({"html": "<p>Hello {{ first_name }}</p>"})

    name: Required[Text] = None
    html: Required[Annotated[str, Field(min_length=1, max_length=1_000_000)]] = None
    text: Annotated[str, Field(max_length=1_000_000)] | None = None


class TemplatePublic(BaseModel):
    """A stored template."""

    model_config = example(
        {
            "id": 1,
            "name": "welcome",
            "html": "<p>Hi {{ first_name }}</p>",
            "text": "Hi {{ first_name }}",
            "created_at": _T,
            "updated_at": _T,
        }
    )

    id: int
    name: str
    html: str
    text: str | None
    created_at: SpecTime
    updated_at: SpecTime


class TemplatePreview(Strict):
    """Sample data to render a template with."""

    model_config = example({"email": "maya@example.com", "fields": {"first_name": "Maya"}})

    email: str = "jane.doe@example.com"
    fields: dict[str, Any] = Field(default_factory=dict)


class RenderedPreview(BaseModel):
    """A template rendered with sample data."""

    model_config = example({"html": "<p>Hi Maya</p>", "text": "Hi Maya"})

    subject: str | None = None
    html: str
    text: str


# --- steps -----------------------------------------------------------------------------------


class ConditionIn(Strict):
    """When a step is sent. `opened`, `not_opened`, `clicked`, `not_clicked` ask about an
    earlier step (`step_id`, or `step_order` in a create payload; `url`: one link of a click
    condition). `performed`, `not_performed` ask whether the recipient performed the tracked
    `event` since enrollment, with the property values `where`, and the properties `match`
    equal to those of the event that enrolled them (campaigns with a `trigger` only).
    `wait_hours`, on any type: once the step is due, wait up to that long for the outcome to
    settle (wait-until)."""

    model_config = example(
        {
            "type": "not_performed",
            "event": "order.completed",
            "match": ["cart_id"],
            "wait_hours": 48,
        }
    )

    type: ConditionType
    step_id: int | None = None
    step_order: int | None = None
    url: Annotated[str, Field(min_length=1, max_length=2000)] | None = None
    event: EventName | None = Field(None, validate_default=True)
    where: Where | None = None
    match: Annotated[list[PropertyName], Field(min_length=1, max_length=16)] | None = None
    wait_hours: WaitHours | None = None

    @field_validator("step_id", "step_order")
    @classmethod
    def _no_step_on_product_conditions(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("type") in PRODUCT_CONDITIONS:
            raise ValueError(f"{info.data['type']} asks about a tracked event, not a step")
        return value

    @field_validator("event")
    @classmethod
    def _event_on_product_conditions(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")
        if kind in PRODUCT_CONDITIONS and value is None:
            raise ValueError(f"a {kind} condition names its event")
        if kind is not None and kind not in PRODUCT_CONDITIONS and value is not None:
            raise ValueError("event applies only to performed / not_performed conditions")
        return value

    @field_validator("where", "match")
    @classmethod
    def _only_on_product_conditions(cls, value: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("type")
        if value is not None and kind is not None and kind not in PRODUCT_CONDITIONS:
            raise ValueError(f"{info.field_name} applies only to performed / not_performed")
        return value

    @model_validator(mode="after")
    def _one_reference(self) -> ConditionIn:
        if self.type in PRODUCT_CONDITIONS:
            return self
        if (self.step_id is None) == (self.step_order is None):
            raise ValueError("give exactly one of step_id or step_order")
        if self.url is not None and self.type in (ConditionType.OPENED, ConditionType.NOT_OPENED):
            raise ValueError("url applies only to clicked / not_clicked conditions")
        return self


class AlternativeIn(Strict):
    """What a step sends instead when its condition fails."""

    model_config = example({"subject": "In case you missed it", "template_id": 2})

    subject: SubjectTemplate
    template_id: int


VariantName = Annotated[str, Field(min_length=1, max_length=64)]
# A proportion (a number, never a string or a boolean): 1 and 1 split 50/50.
Weight = Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False, le=1_000_000)]


class VariantIn(Strict):
    """One variant of an A/B-tested step: its own subject and template, and its share of the
    journeys (`weight`, a proportion); or, with `holdout: true`, a share that is sent nothing but
    measured (conversions) beside the others."""

    model_config = example(
        {"name": "A", "subject": "Welcome aboard", "template_id": 1, "weight": 1}
    )

    name: VariantName
    subject: SubjectTemplate | None = None
    template_id: int | None = None
    weight: Weight
    holdout: bool = False

    @model_validator(mode="after")
    def _message_or_holdout(self) -> VariantIn:
        if self.holdout and (self.subject is not None or self.template_id is not None):
            raise ValueError("a holdout sends nothing: no subject or template_id")
        if not self.holdout and (self.subject is None or self.template_id is None):
            raise ValueError("a variant needs a subject and a template_id (or holdout: true)")
        return self


class WinnerIn(Strict):
    """Choose the best variant by `metric`, `after_hours` after the step's first send; every
    journey reaching the step afterwards gets it (ties go to the first variant listed)."""

    model_config = example({"metric": "open_rate", "after_hours": 24})

    metric: Literal["open_rate", "click_rate", "conversion_rate"]
    after_hours: Annotated[AnyHours, Field(gt=0)]


class StepCreate(Strict):
    """One step of a campaign: a subject, a template, a delay from the previous step, and an
    optional condition and alternative."""

    model_config = example(
        {
            "subject": "Still interested?",
            "delay_hours": 24,
            "template_id": 1,
            "condition": {"type": "not_opened", "step_order": 1},
        }
    )

    subject: SubjectTemplate
    delay_hours: Hours
    template_id: int
    condition: ConditionIn | None = None
    alternative: AlternativeIn | None = None
    # timing (docs/features.md#when-a-message-may-go-out): a delay_until step may omit
    # delay_hours (it is 0)
    delay_until: DelayUntilIn | None = None
    send_window: SendWindowIn | None = None
    ignore_send_window: bool = False
    # A/B test (docs/features.md#ab-variants): 2-4 variants (plus a holdout), a winner rule
    variants: list[VariantIn] | None = Field(None, max_length=5)
    winner: WinnerIn | None = None

    @model_validator(mode="before")
    @classmethod
    def _delay_until_needs_no_delay(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("delay_until") and "delay_hours" not in data:
            return {**data, "delay_hours": 0}
        return data

    @model_validator(mode="after")
    def _alternative_needs_condition(self) -> StepCreate:
        if self.alternative is not None and self.condition is None:
            raise ValueError("an alternative is sent when a condition fails: add a condition")
        return self


class StepUpdate(Strict):
    """The step fields to change (drafts only); the others are kept."""

    model_config = example({"subject": "Still interested?", "delay_hours": 48})

    subject: Required[SubjectTemplate] = None
    delay_hours: Required[Hours] = None
    template_id: Required[int] = None
    condition: ConditionIn | None = None
    alternative: AlternativeIn | None = None
    delay_until: DelayUntilIn | None = None
    send_window: SendWindowIn | None = None
    ignore_send_window: Required[bool] = None
    variants: list[VariantIn] | None = Field(None, max_length=5)
    winner: WinnerIn | None = None


class StepReorder(Strict):
    """Every step id of the campaign exactly once, in the new order."""

    model_config = example({"step_ids": [3, 1, 2]})

    step_ids: list[int] = Field(min_length=1)


def _unset(value: object) -> bool:
    return value is None


class ConditionOut(BaseModel):
    """A step's condition: on an earlier step (`step_id`, `url`), or on a tracked event (`event`,
    `where`, `match`); `wait_hours` when it waits to settle. Fields not set are left out."""

    model_config = example({"type": "not_opened", "step_id": 1, "url": None})

    type: str
    step_id: int | None = Field(None, exclude_if=_unset)
    url: str | None = None
    event: str | None = Field(None, exclude_if=_unset)
    where: dict[str, Any] | None = Field(None, exclude_if=_unset)
    match: list[str] | None = Field(None, exclude_if=_unset)
    wait_hours: AnyHours | None = Field(None, exclude_if=_unset)


class AlternativeOut(BaseModel):
    """What a step sends when its condition fails."""

    model_config = example({"subject": "In case you missed it", "template_id": 2})

    subject: str
    template_id: int


class VariantOut(BaseModel):
    """A variant of an A/B-tested step (`holdout` only when true)."""

    model_config = example(
        {"name": "A", "subject": "Welcome aboard", "template_id": 1, "weight": 1}
    )

    name: str
    subject: str | None = Field(None, exclude_if=_unset)
    template_id: int | None = Field(None, exclude_if=_unset)
    weight: Annotated[float, PlainSerializer(_whole_as_int, return_type=int | float)]
    holdout: bool | None = Field(None, exclude_if=_unset)


class WinnerOut(BaseModel):
    """How the winner is chosen, and once it is, which (`chosen`) and when (`chosen_at`)."""

    model_config = example(
        {"metric": "open_rate", "after_hours": 24, "chosen": "B", "chosen_at": _T}
    )

    metric: str
    after_hours: AnyHours
    chosen: str | None = Field(None, exclude_if=_unset)
    chosen_at: SpecTime | None = Field(None, exclude_if=_unset)


class StepPublic(BaseModel):
    """Spec shape; `condition`, `alternative`, `delay_until`, `send_window`,
    `ignore_send_window`, `variants` and `winner` appear only when set (`delay_hours` is 0 for
    a `delay_until` step)."""

    model_config = example(
        {
            "id": 3,
            "step_order": 2,
            "subject": "Still interested?",
            "delay_hours": 24,
            "template_id": 1,
            "condition": {"type": "not_opened", "step_id": 2},
        }
    )

    id: int
    step_order: int
    subject: str
    delay_hours: Hours
    template_id: int
    condition: ConditionOut | None = None
    alternative: AlternativeOut | None = None
    delay_until: DelayUntilIn | None = None
    send_window: SendWindowIn | None = None
    ignore_send_window: bool | None = None  # shown only when true
    variants: list[VariantOut] | None = Field(None, exclude_if=_unset)
    winner: WinnerOut | None = Field(None, exclude_if=_unset)


# --- triggers, goals and re-entry ------------------------------------------------------------


class TriggerIn(Strict):
    """Each tracked event of this name (with the property values `where`) enrolls the person
    who performed it, while the campaign is active."""

    model_config = example({"event": "cart.abandoned", "where": {"store": "eu"}})

    event: EventName
    where: Where | None = None


class TriggerOut(BaseModel):
    """The tracked event that enrolls people into the campaign."""

    model_config = example({"event": "cart.abandoned", "where": None})

    event: str
    where: dict[str, Any] | None = None


class GoalIn(Strict):
    """The tracked event that fulfils the campaign's purpose: a conversion when performed within
    `window_hours` of the last message sent (or of enrollment); with `exit` (the default) it
    also ends the journey, `converted`."""

    model_config = example({"event": "order.completed", "window_hours": 72, "exit": True})

    event: EventName
    where: Where | None = None
    window_hours: WindowHours
    exit: bool = True


class GoalOut(BaseModel):
    """The campaign's goal event and conversion window."""

    model_config = example(
        {"event": "order.completed", "where": None, "window_hours": 72, "exit": True}
    )

    event: str
    where: dict[str, Any] | None = None
    window_hours: AnyHours
    exit: bool


class ReentryIn(Strict):
    """Whether a person may enter the campaign again, once their previous journey in it has
    ended and `cooldown_hours` have passed (never after an unsubscribe, a complaint, a hard
    bounce or an erasure). Without it an address enters a campaign at most once, ever."""

    model_config = example({"allowed": True, "cooldown_hours": 720})

    allowed: bool
    cooldown_hours: CooldownHours = 0


class ReentryOut(BaseModel):
    """Re-entry into the campaign: allowed, after the cooldown."""

    model_config = example({"allowed": True, "cooldown_hours": 720})

    allowed: bool
    cooldown_hours: AnyHours


# --- campaigns -------------------------------------------------------------------------------


class CampaignCreate(Strict):
    """A new draft campaign and its steps, in order."""

    model_config = example(
        {
            "name": "Onboarding",
            "from_email": "hello@example.com",
            "steps": [{"subject": "Welcome", "delay_hours": 0, "template_id": 1}],
        }
    )

    name: Text
    from_email: SenderAddress | None = None
    from_name: DisplayName | None = None
    reply_to: SenderAddress | None = None
    trigger: TriggerIn | None = None
    goal: GoalIn | None = None
    reentry: ReentryIn | None = None
    steps: list[StepCreate] = Field(default_factory=list, max_length=100)
    send_window: SendWindowIn | None = None
    frequency_cap: CapUse = "apply"
    on_cap: OnCap = "defer"


class CampaignUpdate(Strict):
    """The campaign fields to change; `status` moves it (draft→active, active⇄paused,
    any→archived). `trigger`, `goal` and `reentry` change only while it is a draft (`null`
    removes one)."""

    model_config = example({"status": "active"})

    name: Required[Text] = None
    status: Required[Literal["draft", "active", "paused", "archived"]] = None
    from_email: SenderAddress | None = None
    from_name: DisplayName | None = None
    reply_to: SenderAddress | None = None
    trigger: TriggerIn | None = None
    goal: GoalIn | None = None
    reentry: ReentryIn | None = None
    # timing: drafts only (running journeys are pinned to the plan they started with)
    send_window: SendWindowIn | None = None
    frequency_cap: Required[CapUse] = None
    on_cap: Required[OnCap] = None


class CampaignSummary(BaseModel):
    """Spec shape of `GET /api/campaigns` items."""

    model_config = example(
        {
            "id": 1,
            "name": "Onboarding",
            "status": "active",
            "created_at": _T,
            "steps_count": 3,
            "recipients_count": 2,
        }
    )

    id: int
    name: str
    status: str
    created_at: SpecTime
    steps_count: int
    recipients_count: int


class CampaignPublic(CampaignSummary):
    """A campaign with its sender fields and its steps."""

    model_config = example(
        {
            "id": 1,
            "name": "Onboarding",
            "status": "paused",
            "status_reason": "paused by an operator",
            "created_at": _T,
            "updated_at": _T,
            "from_email": "hello@example.com",
            "from_name": "Example Team",
            "reply_to": "support@example.com",
            "steps_count": 1,
            "recipients_count": 2,
            "steps": [
                {"id": 1, "step_order": 1, "subject": "Welcome", "delay_hours": 0, "template_id": 1}
            ],
        }
    )

    status_reason: str | None
    from_email: str | None
    from_name: str | None
    reply_to: str | None
    updated_at: SpecTime
    # null when unset: no trigger (enrolled by API or import only), no goal, enter once ever.
    trigger: TriggerOut | None = None
    goal: GoalOut | None = None
    reentry: ReentryOut | None = None
    steps: list[StepPublic]
    send_window: SendWindowIn | None = None
    frequency_cap: str = "apply"
    on_cap: str = "defer"


class CampaignStats(BaseModel):
    """Spec shape of `GET /api/campaigns/stats`."""

    model_config = example(
        {
            "campaign_id": 1,
            "recipients": 2,
            "completed": 1,
            "completion_rate": 0.5,
            "open_rate": 0.5,
            "click_rate": 0,
        }
    )

    campaign_id: int
    recipients: int
    completed: int
    completion_rate: float
    open_rate: float
    click_rate: float


# --- recipients ------------------------------------------------------------------------------

FieldValue = str | int | float | bool | None


class RecipientIn(Strict):
    """One address to enroll, with the fields its templates see."""

    model_config = example({"email": "maya@example.com", "fields": {"first_name": "Maya"}})

    email: Annotated[str, Field(max_length=320)]
    fields: dict[Annotated[str, Field(max_length=100)], FieldValue] = Field(default_factory=dict)


class EnrollRequest(Strict):
    """Recipients to enroll in an active campaign."""

    model_config = example(
        {
            "recipients": [
                {"email": "maya@example.com", "fields": {"first_name": "Maya"}},
                {"email": "li@example.com"},
            ]
        }
    )

    recipients: list[RecipientIn] = Field(min_length=1, max_length=10_000)


class Rejected(BaseModel):
    """An address that was not enrolled, and why."""

    model_config = example({"email": "not-an-address", "reason": "invalid email address"})

    email: str
    reason: str


class EnrollResult(BaseModel):
    """What an enrollment did: enrolled, already enrolled (an address is enrolled at most once),
    rejected."""

    model_config = example({"enrolled": 2, "already_enrolled": 0, "rejected": []})

    enrolled: int
    already_enrolled: int
    rejected: list[Rejected]


class EnrollmentPublic(BaseModel):
    """One address's enrollment in a campaign (`entry`: which of their entries)."""

    model_config = example(
        {
            "email": "maya@example.com",
            "entry": 1,
            "status": "active",
            "status_reason": None,
            "current_step": 1,
            "enrolled_at": _T,
            "finished_at": None,
        }
    )

    email: str
    entry: int = 1
    status: JourneyStatus
    status_reason: str | None
    current_step: int
    enrolled_at: SpecTime
    finished_at: SpecTime | None


class EnrollmentPage(BaseModel):
    """A page of a campaign's enrollments (offset pagination)."""

    model_config = example(
        {
            "items": [
                {
                    "email": "maya@example.com",
                    "entry": 1,
                    "status": "active",
                    "status_reason": None,
                    "current_step": 2,
                    "enrolled_at": _T,
                    "finished_at": None,
                }
            ],
            "total": 1,
            "limit": 100,
            "offset": 0,
        }
    )

    items: list[EnrollmentPublic]
    total: int
    limit: int
    offset: int


class EvidencePublic(BaseModel):
    """An event a decision rests on: an engagement event (`open`, `click`, with its step and
    link) or a tracked product event (`type` is its name), by id and time."""

    model_config = example(
        {"event_id": "evt_9f2c", "type": "order.completed", "at": _T, "step_id": None, "url": None}
    )

    event_id: str
    type: str
    at: str | None
    step_id: int | None = None
    url: str | None = None


class StepEngagement(BaseModel):
    """What one step did for one journey: its delivery, the engagement seen, and why it was
    decided so (`reason`, one sentence, and the events it rests on in `evidence`)."""

    model_config = example(_STEP_ENGAGEMENT)

    step_id: int
    step_order: int
    decision: Decision
    condition_met: bool | None
    decided_at: SpecTime
    reason: str
    evidence: list[EvidencePublic]
    delivery_id: str
    delivery_status: str
    variant: str | None = Field(None, exclude_if=_unset)  # the A/B variant it was given
    sent_at: SpecTime | None
    opened: bool
    clicked: bool
    clicked_urls: list[str]
    machine_opens: int
    machine_clicks: int


class WaitingForPublic(BaseModel):
    """What a running journey waits for before its next step: `kind` (a delay, a date, a send
    window, a wait-until condition, a frequency cap, a pause), `until` when (null: until a
    signal), one sentence saying it, and where they apply the condition waited on and the time
    zone a window or date is read in."""

    model_config = example(
        {
            "kind": "wait_until",
            "until": "2026-12-03T09:00:00Z",
            "reason": "step 2 waits up to 48 h for opened(step 1)",
            "condition": "opened(step 1)",
        }
    )

    kind: WaitingKind
    until: str | None
    reason: str
    # Present only where they apply.
    condition: str | None = Field(None, exclude_if=lambda v: v is None)
    zone: str | None = Field(None, exclude_if=lambda v: v is None)


class ConversionPublic(BaseModel):
    """The journey's conversion: its goal event within the window, attributed to the last step
    sent before it (`step_id`/`step_order` null when it came before any message)."""

    model_config = example(
        {"event_id": "evt_9f2c", "step_id": 12, "step_order": 2, "occurred_at": _T}
    )

    event_id: str
    step_id: int | None
    step_order: int | None
    occurred_at: SpecTime


class DeliveryPublic(BaseModel):
    """One step's message to one recipient, as `GET /api/deliveries` lists it."""

    model_config = example(_DELIVERY)

    id: str
    campaign_id: int
    step_id: int
    step_order: int
    email: str | None  # None once the recipient is erased
    status: str
    error: str | None
    subject: str | None
    message_id: str | None
    send_started_at: SpecTime | None
    sent_at: SpecTime | None


class DeliveryPage(BaseModel):
    """A page of deliveries in one status (offset pagination)."""

    model_config = example({"items": [_DELIVERY], "total": 1, "limit": 100, "offset": 0})

    items: list[DeliveryPublic]
    total: int
    limit: int
    offset: int


class JourneyPublic(BaseModel):
    """One recipient's journey, live: its status, where it is and what it waits for, each step's
    delivery, engagement and reason, and its conversion. `entry` numbers the person's entries
    into the campaign; `version` is the journey code path it runs (null once Temporal has
    forgotten a finished journey); `campaign_version` the campaign version whose steps it runs
    (docs/features.md#versions)."""

    model_config = example(
        {
            "email": "maya@example.com",
            "campaign_id": 1,
            "workflow_id": "drip-campaign-1-maya@example.com",
            "entry": 1,
            "version": 5,
            "campaign_version": 1,
            "status": "active",
            "status_reason": None,
            "current_step": 1,
            "next_step_due_at": None,
            "waiting_for": {
                "kind": "wait_until",
                "until": "2026-12-03T09:00:00Z",
                "reason": "step 2 waits up to 48 h for opened(step 1)",
                "condition": "opened(step 1)",
            },
            "paused": False,
            "live": True,
            "fields": {"first_name": "Maya"},
            "enrolled_at": _T,
            "finished_at": None,
            "steps": [_STEP_ENGAGEMENT],
            "conversion": None,
        }
    )

    email: str
    campaign_id: int
    workflow_id: str
    entry: int
    version: int | None
    campaign_version: int
    status: JourneyStatus
    status_reason: str | None
    current_step: int
    next_step_due_at: SpecTime | None
    waiting_for: WaitingForPublic | None
    paused: bool
    live: bool
    fields: dict[str, Any]
    enrolled_at: SpecTime
    finished_at: SpecTime | None
    steps: list[StepEngagement]
    conversion: ConversionPublic | None


# --- events ----------------------------------------------------------------------------------


class EventIn(Strict):
    """An engagement event for a delivery; idempotent by `event_id`."""

    model_config = example({"delivery_id": "snd_3f2a9c", "type": "open", "event_id": "my-event-1"})

    delivery_id: Annotated[str, Field(min_length=1, max_length=64)]
    type: EventType
    url: Annotated[str, Field(max_length=2000)] | None = None
    event_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    occurred_at: datetime | None = None

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class EventAccepted(BaseModel):
    """The event was stored (or was already) and its journey will hear of it."""

    model_config = example({"id": 42, "duplicate": False})

    id: int
    duplicate: bool


class EventPublic(BaseModel):
    """A stored engagement event."""

    model_config = example(
        {
            "id": 42,
            "provider": "api",
            "type": "open",
            "raw_type": "open",
            "delivery_id": "snd_3f2a9c",
            "campaign_id": 1,
            "email": "maya@example.com",
            "url": None,
            "machine": False,
            "machine_reason": None,
            "occurred_at": _T,
            "received_at": _T,
            "signalled": True,
        }
    )

    id: int
    provider: str
    type: str | None
    raw_type: str
    delivery_id: str | None
    campaign_id: int | None
    email: str | None
    url: str | None
    machine: bool
    machine_reason: str | None
    occurred_at: SpecTime
    received_at: SpecTime
    signalled: bool


# --- tracked events --------------------------------------------------------------------------

PROPERTIES_LIMIT = 16 * 1024  # bytes of a tracked event's properties, as compact JSON


def _small_properties(value: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > PROPERTIES_LIMIT:
        raise ValueError(f"at most {PROPERTIES_LIMIT} bytes as JSON ({size} given)")
    return value


class TrackIn(Strict):
    """Something a person did in the product. `properties` describe the event (at most 16 KiB
    as JSON); `fields` describe the person and are used when the event enrolls them through a
    campaign's trigger. Idempotent by `event_id` (generated when omitted)."""

    model_config = example(
        {
            "email": "maya@example.com",
            "event": "trial.started",
            "properties": {"plan": "pro"},
            "fields": {"first_name": "Maya", "timezone": "Europe/Paris"},
            "event_id": "evt-8c1d",
            "occurred_at": _T,
        }
    )

    email: Annotated[str, Field(max_length=320)]
    event: EventName
    properties: Annotated[dict[str, Any], AfterValidator(_small_properties)] = Field(
        default_factory=dict
    )
    fields: dict[Annotated[str, Field(max_length=100)], FieldValue] = Field(default_factory=dict)
    event_id: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    occurred_at: datetime | None = Field(
        default=None, description="when it happened (ISO 8601; default: when received)"
    )

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class NotEnrolledOut(BaseModel):
    """A campaign whose trigger matched the event but did not enroll the person, and why."""

    model_config = example({"campaign_id": 4, "reason": "suppressed: unsubscribe"})

    campaign_id: int
    reason: str


class TrackAccepted(BaseModel):
    """The event is stored (or was already: `duplicate`, and nothing else happened): the
    campaigns its trigger enrolled the person into, those that refused (a suppressed address,
    already enrolled), and how many running journeys were told of it."""

    model_config = example(
        {
            "event_id": "evt-8c1d",
            "duplicate": False,
            "enrolled": [3],
            "not_enrolled": [],
            "journeys_signalled": 1,
        }
    )

    event_id: str
    duplicate: bool
    enrolled: list[int]
    not_enrolled: list[NotEnrolledOut] = Field(default_factory=list)
    journeys_signalled: int


class TrackBatchIn(Strict):
    """Up to 1,000 tracked events; each is checked on its own (a wrong one is rejected with its
    index, the others are recorded)."""

    model_config = example({"events": [{"email": "maya@example.com", "event": "order.completed"}]})

    events: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=1000,
        json_schema_extra={"items": {"$ref": "#/components/schemas/TrackIn"}},
    )


class TrackRejected(BaseModel):
    """An event of a batch that was not recorded: its index in `events`, and why."""

    model_config = example({"index": 3, "reason": "event: must be 1 to 128 printable characters"})

    index: int
    reason: str


class TrackBatchAccepted(BaseModel):
    """What a batch did: events newly recorded, duplicates (already stored), rejected."""

    model_config = example({"accepted": 2, "duplicates": 0, "rejected": []})

    accepted: int
    duplicates: int
    rejected: list[TrackRejected]


class TrackedEventPublic(BaseModel):
    """A stored tracked event."""

    model_config = example(
        {
            "event_id": "evt-8c1d",
            "event": "trial.started",
            "properties": {"plan": "pro"},
            "occurred_at": _T,
            "received_at": _T,
        }
    )

    event_id: str
    event: str
    properties: dict[str, Any]
    occurred_at: SpecTime
    received_at: SpecTime


class TrackedEventPage(BaseModel):
    """A page of a person's tracked events, newest first (a cursor page: pass `next_cursor`
    back as `?cursor=`)."""

    model_config = example(
        {
            "items": [
                {
                    "event_id": "evt-8c1d",
                    "event": "trial.started",
                    "properties": {"plan": "pro"},
                    "occurred_at": _T,
                    "received_at": _T,
                }
            ],
            "next_cursor": "WyIyMDI2LTEyLTAxVDA5OjAwOjAwKzAwOjAwIiwgNDJd",
        }
    )

    items: list[TrackedEventPublic]
    next_cursor: str | None


class RecipientFieldsUpdate(Strict):
    """Field values to merge into the person's running journeys (from their next step on)."""

    model_config = example({"fields": {"timezone": "America/New_York", "trial_ends_at": _T}})

    fields: dict[Annotated[str, Field(max_length=100)], FieldValue] = Field(min_length=1)


class RecipientFieldsUpdated(BaseModel):
    """How many running journeys took the new field values."""

    model_config = example({"email": "maya@example.com", "journeys_updated": 2})

    email: str
    journeys_updated: int


# --- enrollment batches ----------------------------------------------------------------------


class BatchAccepted(BaseModel):
    """202 answer to a large enrollment: the rows are stored; follow `progress_url`."""

    model_config = example(
        {
            "batch_id": 7,
            "campaign_id": 1,
            "accepted": 25000,
            "rejected": 0,
            "status": "accepted",
            "progress_url": "/api/enrollment-batches/7",
        }
    )

    batch_id: int
    campaign_id: int
    accepted: int
    rejected: int  # rows refused while reading (e.g. no email); invalid addresses come later
    status: str
    progress_url: str


class RejectedRow(BaseModel):
    """A row of a CSV import that was not enrolled, and why."""

    model_config = example(
        {"row": 12, "email": "not-an-address", "reason": "invalid email address"}
    )

    row: int  # CSV: line number in the file (the header is line 1); JSON: index in `recipients`
    email: str
    reason: str


class BatchProgress(BaseModel):
    """An enrollment batch's progress: rows staged, enrolled, rejected."""

    model_config = example(
        {
            "id": 7,
            "campaign_id": 1,
            "source": "csv",
            "filename": "recipients.csv",
            "status": "running",
            "status_reason": None,
            "accepted": 25000,
            "processed": 10001,
            "enrolled": 10000,
            "started": 9800,
            "duplicates": 0,
            "rejected": 1,
            "rejected_rows": [{"row": 12, "email": "not-an-address", "reason": "invalid email"}],
            "rejected_limit": 100,
            "rejected_offset": 0,
            "created_at": _T,
            "updated_at": _T,
            "finished_at": None,
        }
    )

    id: int
    campaign_id: int
    source: str
    filename: str | None
    status: str  # accepted | running | completed | cancelled
    status_reason: str | None
    accepted: int
    processed: int  # enrolled + duplicates + rejected
    enrolled: int
    started: int
    duplicates: int
    rejected: int
    rejected_rows: list[RejectedRow]
    rejected_limit: int
    rejected_offset: int
    created_at: SpecTime
    updated_at: SpecTime
    finished_at: SpecTime | None


# --- funnel ----------------------------------------------------------------------------------


class FunnelStep(BaseModel):
    """One step's funnel. Counts of journeys (reached, sent, skipped...) and of deliveries
    with at least one such event (delivered, opened...); `opened`/`clicked` count people,
    `opened_including_machine`/`clicked_including_machine` also privacy proxies and scanners."""

    model_config = example(_FUNNEL_STEP)

    step_id: int
    step_order: int
    subject: str
    reached: int
    sent: int
    alternative_sent: int
    skipped: int
    delivered: int
    opened: int
    clicked: int
    bounced: int
    unsubscribed: int
    complained: int
    opened_including_machine: int
    clicked_including_machine: int
    # Maybe sent (the attempt died past the point of no return; held, not resent) and refused
    # for good by the server (size, content): see GET /api/deliveries?status=uncertain.
    uncertain: int = 0
    failed: int = 0
    # Held by the frequency cap (docs/features.md#frequency-caps): journeys whose step waited
    # for a slot, and journeys whose step was skipped for it.
    deferred_by_cap: int = 0
    skipped_by_cap: int = 0
    # Conversions attributed to this step: the last message sent before the goal event.
    converted: int = 0
    # An A/B-tested step: each variant's figures, and the winner rule (and choice, once made).
    variants: list[FunnelVariant] | None = Field(None, exclude_if=_unset)
    winner: WinnerOut | None = Field(None, exclude_if=_unset)


class FunnelVariant(BaseModel):
    """One variant of an A/B-tested step: journeys given it (`assigned`), sent, delivered,
    human-opened, clicked and converted (last touch), `open_rate` and `click_rate` over sent,
    `conversion_rate` over assigned (3 decimals). A holdout sends nothing: compare its
    conversion rate."""

    model_config = example(
        {"name": "B", "holdout": False, "assigned": 500, "sent": 498, "delivered": 490,
         "opened": 201, "clicked": 64, "converted": 12, "open_rate": 0.404,
         "click_rate": 0.129, "conversion_rate": 0.024}
    )  # fmt: skip

    name: str
    holdout: bool
    assigned: int
    sent: int
    delivered: int
    opened: int
    clicked: int
    converted: int
    open_rate: float
    click_rate: float
    conversion_rate: float


class CampaignFunnel(BaseModel):
    """A campaign's funnel, step by step. `completed` counts journeys that reached the end or
    were ended by the goal (converted); `converted` counts conversions (goal events within the
    window, once per journey) and `conversion_rate` is converted ÷ recipients (3 decimals)."""

    model_config = example(
        {
            "campaign_id": 1,
            "recipients": 2,
            "completed": 1,
            "converted": 1,
            "conversion_rate": 0.5,
            "steps": [_FUNNEL_STEP],
        }
    )

    campaign_id: int
    recipients: int
    completed: int
    converted: int = 0
    conversion_rate: float = 0
    steps: list[FunnelStep]


# --- suppressions (api/routes/suppressions.py) ---


class SuppressionCreate(Strict):
    """An address never to mail again, and why."""

    model_config = example({"email": "maya@example.com"})

    email: Annotated[str, Field(max_length=320)]
    reason: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class SuppressionPublic(BaseModel):
    """A suppressed address."""

    model_config = example(_SUPPRESSION)

    email: str
    reason: str
    source: str | None
    created_at: SpecTime


class SuppressionPage(BaseModel):
    """A page of suppressed addresses (offset pagination)."""

    model_config = example({"items": [_SUPPRESSION], "total": 1, "limit": 100, "offset": 0})

    items: list[SuppressionPublic]
    total: int
    limit: int
    offset: int


# --- test sends (api/routes/trial_send.py) ---


class TrialSendRequest(BaseModel):
    """Where to send a campaign's steps as test messages, and the fields to render them with."""

    model_config = example({"email": "me@example.com", "fields": {"first_name": "Maya"}})

    email: Annotated[str, Field(max_length=320)]
    fields: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    step_id: int | None = None
    alternative: bool = False  # send the steps' alternative messages where they have one


class TrialSent(BaseModel):
    """One test message sent."""

    model_config = example(_TRIAL_SENT)

    step_id: int
    step_order: int
    subject: str
    message_id: str


class TrialSendResult(BaseModel):
    """The test messages sent, one per step."""

    model_config = example({"sent": [_TRIAL_SENT]})

    sent: list[TrialSent]


# --- api/routes/health.py ---


class Readiness(BaseModel):
    """Whether the API can do its job: each check `ok` or what failed."""

    model_config = example({"status": "ready", "checks": {"database": "ok", "temporal": "ok"}})

    status: str  # ready | unavailable
    checks: dict[str, str]  # check -> ok | unreachable


# --- api/routes/webhooks.py ---


class WebhookReceived(BaseModel):
    """How many of the webhook's events were stored."""

    model_config = example({"received": 3, "stored": 2, "duplicates": 1})

    received: int  # events in the request
    stored: int  # newly stored
    duplicates: int  # already stored: a provider retry or a replay, counted once


def batch_accepted(batch: Accepted) -> BatchAccepted:
    return BatchAccepted(
        batch_id=batch.batch_id,
        campaign_id=batch.campaign_id,
        accepted=batch.accepted,
        rejected=batch.rejected,
        status=batch.status,
        progress_url=f"/api/enrollment-batches/{batch.batch_id}",
    )


def batch_progress(
    batch: EnrollmentBatch, rejected: list[EnrollmentBatchRow], limit: int, offset: int
) -> BatchProgress:
    return BatchProgress(
        id=batch.id or 0,
        campaign_id=batch.campaign_id,
        source=batch.source,
        filename=batch.filename,
        status=batch.status,
        status_reason=batch.status_reason,
        accepted=batch.accepted,
        processed=batch.enrolled + batch.duplicates + batch.rejected,
        enrolled=batch.enrolled,
        started=batch.started,
        duplicates=batch.duplicates,
        rejected=batch.rejected,
        rejected_rows=[
            RejectedRow(row=r.row, email=r.email, reason=r.reason or "") for r in rejected
        ],
        rejected_limit=limit,
        rejected_offset=offset,
        created_at=batch.created_at,
        updated_at=batch.updated_at,
        finished_at=batch.finished_at,
    )


def enrollment_public(e: Enrollment) -> EnrollmentPublic:
    """An enrollment row as the API and the dashboard show it."""
    return EnrollmentPublic(
        email=e.email,
        entry=e.entry,
        status=JourneyStatus(e.status),
        status_reason=e.status_reason,
        current_step=e.current_step,
        enrolled_at=e.created_at,
        finished_at=e.finished_at,
    )


class ErasureSummary(BaseModel):
    """What an erasure removed, and the suppression kept as a hash."""

    model_config = example(
        {
            "email": "maya@example.com",
            "found": True,
            "journeys_ended": 1,
            "workflows_deleted": 2,
            "enrollments_deleted": 2,
            "deliveries_deleted": 3,
            "events_deleted": 4,
            "tracked_events_deleted": 1,
            "suppression": "erased",
        }
    )

    email: str
    found: bool = Field(description="whether anything was held about the address")
    journeys_ended: int = Field(description="running journeys told to stop")
    workflows_deleted: int = Field(description="workflow executions deleted from Temporal")
    enrollments_deleted: int
    deliveries_deleted: int
    events_deleted: int
    tracked_events_deleted: int = Field(description="product events (POST /api/track) deleted")
    suppression: str | None = Field(
        description="the suppression reason kept as a hash of the address, so it is never "
        "mailed again; null when the address was not suppressed"
    )


# --- timing (send windows, delay until a date, the frequency cap: docs/features.md) ---------


def _clock(value: str) -> str:
    parse_clock(value)  # ValueError names what is wrong
    return value


def _zone(value: str) -> str:
    if value != RECIPIENT_ZONE and zone_or_none(value) is None:
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Berlin) or 'recipient'")
    return value


def _iana_zone(value: str) -> str:
    if zone_or_none(value) is None:
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Berlin)")
    return value


Clock = Annotated[str, Field(examples=["09:00"], description="HH:MM, 24-hour wall clock"),
                  AfterValidator(_clock)]  # fmt: skip
WindowZone = Annotated[str, Field(max_length=64), AfterValidator(_zone)]
IanaZone = Annotated[str, Field(max_length=64), AfterValidator(_iana_zone)]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class SendWindowIn(Strict):
    """When messages may go out: on `days`, from `start` to `end` (wall clock; `start` after
    `end` crosses midnight), in `timezone` — an IANA zone, or `recipient` for the recipient's
    `timezone` field, then `fallback_timezone` when it is missing or not a valid zone."""

    model_config = example(
        {
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "start": "09:00",
            "end": "17:00",
            "timezone": "recipient",
            "fallback_timezone": "America/New_York",
        }
    )

    days: list[Day] = Field(min_length=1, max_length=7)
    start: Clock
    end: Clock
    timezone: WindowZone
    fallback_timezone: IanaZone | None = Field(default=None, validate_default=True)

    @field_validator("end")
    @classmethod
    def _not_empty(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("start") == value:
            raise ValueError("end equals start: the window would be empty (or always open)")
        return value

    @field_validator("fallback_timezone")
    @classmethod
    def _fallback_with_recipient(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("timezone") == RECIPIENT_ZONE:
            raise ValueError("required with timezone 'recipient' (for a missing or invalid one)")
        return value

    @field_validator("days")
    @classmethod
    def _each_day_once(cls, value: list[str]) -> list[str]:
        return sorted(set(value), key=DAYS.index)


class DelayUntilIn(Strict):
    """A step due at the date in a recipient field (ISO 8601 date-time, or a date: 00:00 in
    the recipient's zone), plus `offset_hours` (negative: before it)."""

    model_config = example({"field": "trial_ends_at", "offset_hours": -24})

    field: Annotated[str, Field(min_length=1, max_length=100)]
    offset_hours: Annotated[
        float, Field(strict=True, allow_inf_nan=False, ge=-24 * 365 * 10, le=24 * 365 * 10)
    ] = 0


class FrequencyCapIn(Strict):
    """At most `max_messages` to one address in any `per_hours` (rolling), across campaigns."""

    model_config = example({"max_messages": 3, "per_hours": 24})

    max_messages: Annotated[int, Field(ge=1, le=1_000_000, strict=True)]
    per_hours: Annotated[float, Field(gt=0, le=24 * 366, strict=True, allow_inf_nan=False)]


class FrequencyCapPublic(BaseModel):
    """The frequency cap in force."""

    model_config = example({"max_messages": 3, "per_hours": 24, "updated_at": _T})

    max_messages: int
    per_hours: Annotated[float, PlainSerializer(_whole_as_int, return_type=int | float)]
    updated_at: SpecTime


CapUse = Literal["apply", "exempt"]
OnCap = Literal["defer", "skip"]


# --- errors (RFC 9457 problem details; answered by api/errors.py) ---------------------------


class FieldError(BaseModel):
    """One wrong part of a request: where it is, what is wrong with it."""

    model_config = example(
        {
            "loc": ["body", "steps", 0, "template_id"],
            "msg": "template 7 does not exist",
            "type": "value_error",
        }
    )

    loc: list[str | int] = Field(
        description="where: `body`, `query`, `path` or `header`, then the field's path",
        examples=[["body", "steps", 0, "template_id"]],
    )
    msg: str = Field(examples=["template 7 does not exist"])
    type: str = Field(description="the kind of error (FastAPI's and pydantic's names)")


class Problem(BaseModel):
    """An error answer, `application/problem+json` (RFC 9457)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:drip:problem:not_found",
                    "title": "Not Found",
                    "status": 404,
                    "detail": "campaign 7 not found",
                    "code": "not_found",
                }
            ]
        }
    )

    type: str = Field(description="a URI naming the kind of problem: `urn:drip:problem:{code}`")
    title: str = Field(description="the HTTP status phrase")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="what went wrong, in one sentence for a person")
    code: str = Field(
        description="stable and machine-readable: `not_found`, `conflict`, `validation_failed`, "
        "`unauthorized`, `body_too_large`, ..."
    )


class ValidationProblem(Problem):
    """A 422: the request's fields that are wrong, each named by its location."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:drip:problem:validation_failed",
                    "title": "Unprocessable Entity",
                    "status": 422,
                    "detail": "body.steps.0.template_id: template 7 does not exist",
                    "code": "validation_failed",
                    "errors": [
                        {
                            "loc": ["body", "steps", 0, "template_id"],
                            "msg": "template 7 does not exist",
                            "type": "value_error",
                        }
                    ],
                }
            ]
        }
    )

    errors: list[FieldError]


# --- pagination (api/pagination.py) ----------------------------------------------------------

Item = TypeVar("Item")


class CursorPage(BaseModel, Generic[Item]):
    """A page of a list: its items, and the cursor of the next page (`null` on the last). Pass
    it back as `?cursor=` with the same `?limit=`. The shape of every new list endpoint; the
    older ones keep their offset pages."""

    items: list[Item]
    next_cursor: str | None = Field(
        description="opaque; `null` when this is the last page", examples=["WzQyXQ"]
    )


# --- campaign versions (services/versions.py) -----------------------------------------------


class VersionStepIn(StepCreate):
    """A step of a version's definition: with an existing step's `id` it is that step, edited
    in place; without, a new step."""

    model_config = example({"id": 1, "subject": "Welcome!", "delay_hours": 0, "template_id": 1})

    id: int | None = None


class VersionDefinition(Strict):
    """A draft version's whole definition, as in a create payload: steps left out are removed,
    campaign fields left out take their defaults."""

    model_config = example(
        {
            "steps": [
                {"id": 1, "subject": "Welcome!", "delay_hours": 0, "template_id": 1},
                {"subject": "A new last step", "delay_hours": 48, "template_id": 2},
            ]
        }
    )

    steps: list[VersionStepIn] = Field(default_factory=list, max_length=100)
    trigger: TriggerIn | None = None
    goal: GoalIn | None = None
    reentry: ReentryIn | None = None
    send_window: SendWindowIn | None = None
    frequency_cap: CapUse = "apply"
    on_cap: OnCap = "defer"


class VersionSummary(BaseModel):
    """A campaign version: `draft` (at most one), `live` (what new enrollments start on), or
    `retired`; `journeys`: how many running journeys are on it."""

    model_config = example(
        {
            "version": 2,
            "status": "live",
            "created_at": _T,
            "published_at": _T,
            "policy": "migrate",
            "journeys": 42,
        }
    )

    version: int
    status: Literal["draft", "live", "retired"]
    created_at: SpecTime
    published_at: SpecTime | None = None
    policy: Literal["stay", "migrate", "exit"] | None = None
    journeys: int


class VersionPublic(VersionSummary):
    """A version with its definition. New steps of a draft have negative ids until it is
    published."""

    model_config = example(
        {
            "version": 2,
            "status": "draft",
            "created_at": _T,
            "published_at": None,
            "policy": None,
            "journeys": 0,
            "steps": [{"id": 1, "step_order": 1, "subject": "Hi", "delay_hours": 0,
                       "template_id": 1}],
            "send_window": None,
            "goal": None,
            "trigger": None,
            "reentry": None,
            "frequency_cap": "apply",
            "on_cap": "defer",
        }
    )  # fmt: skip

    steps: list[StepPublic]
    send_window: SendWindowIn | None = None
    goal: GoalOut | None = None
    trigger: TriggerOut | None = None
    reentry: ReentryOut | None = None
    frequency_cap: str
    on_cap: str


class PublishRequest(Strict):
    """How running journeys take the new version: `stay` on theirs, `migrate` at their next
    step boundary, or `exit`. `dry_run`: change nothing, answer the impact."""

    model_config = example({"policy": "migrate", "dry_run": True})

    policy: Literal["stay", "migrate", "exit"]
    dry_run: bool = False


class VersionPreviewRequest(Strict):
    """A definition (as `PUT .../versions/{number}` takes it) and a policy: the impact that
    publishing it would have, computed as a draft's dry run is, with no version stored."""

    model_config = example(
        {
            "definition": {
                "steps": [
                    {"id": 1, "subject": "Welcome!", "delay_hours": 0, "template_id": 1},
                    {"subject": "A new last step", "delay_hours": 48, "template_id": 2},
                ]
            },
            "policy": "migrate",
        }
    )

    definition: VersionDefinition
    policy: Literal["stay", "migrate", "exit"]


class StepCountOut(BaseModel):
    """Running journeys waiting before a step (its id)."""

    model_config = example({"step_id": 2, "count": 20})

    step_id: int
    count: int


class MoveOut(BaseModel):
    """Journeys waiting before `from_step` that continue at `to_step` (`null`: past the end,
    they finish)."""

    model_config = example({"from_step": 2, "to_step": 3, "count": 20})

    from_step: int
    to_step: int | None
    count: int


class TemplateChangeOut(BaseModel):
    """A template edited since a version using it was published: template edits reach
    in-flight sends at once, whatever version their journey is on."""

    model_config = example({"version": 1, "step_id": 2, "template_id": 1, "updated_at": _T})

    version: int
    step_id: int
    template_id: int
    updated_at: SpecTime


class PublishImpact(BaseModel):
    """What a publish would do to the journeys in flight, counted from the database."""

    model_config = example(
        {
            "policy": "migrate",
            "in_flight": 50,
            "waiting_before": [{"step_id": 2, "count": 20}, {"step_id": 3, "count": 30}],
            "moves": [{"from_step": 2, "to_step": 3, "count": 20},
                      {"from_step": 3, "to_step": 3, "count": 30}],
            "exits": 0,
            "template_changes": [],
        }
    )  # fmt: skip

    policy: Literal["stay", "migrate", "exit"]
    in_flight: int
    waiting_before: list[StepCountOut]
    moves: list[MoveOut]
    exits: int
    template_changes: list[TemplateChangeOut]


class VersionPage(CursorPage[VersionSummary]):
    """A page of a campaign's versions, oldest first (a cursor page)."""

    model_config = example(
        {
            "items": [
                {"version": 1, "status": "retired", "created_at": _T, "published_at": _T,
                 "policy": "stay", "journeys": 3},
                {"version": 2, "status": "live", "created_at": _T, "published_at": _T,
                 "policy": "migrate", "journeys": 42},
            ],
            "next_cursor": None,
        }
    )  # fmt: skip


# --- journey events out (webhook subscriptions) ---------------------------------------------


class WebhookSubscriptionCreate(Strict):
    """A receiver of journey events: the URL drip POSTs each event to, signed, and the event
    types it wants. A URL on a private, loopback or link-local address is refused (422) unless
    DRIP_WEBHOOK_ALLOW_PRIVATE=true."""

    model_config = example(
        {
            "url": "https://crm.example.com/hooks/drip",
            "events": ["step.sent", "journey.converted"],
            "description": "CRM sync",
        }
    )

    url: str = Field(max_length=2048, description="http(s) URL; resolved, must be public")
    events: list[JourneyEventType] = Field(min_length=1, max_length=32)
    description: str | None = Field(None, max_length=500)


class WebhookSubscriptionPublic(BaseModel):
    """A webhook subscription (its secret is shown only when it is created)."""

    model_config = example(
        {
            "id": 1,
            "url": "https://crm.example.com/hooks/drip",
            "events": ["step.sent", "journey.converted"],
            "description": "CRM sync",
            "created_at": _T,
        }
    )

    id: int
    url: str
    events: list[str]
    description: str | None = None
    created_at: SpecTime


class WebhookSubscriptionCreated(WebhookSubscriptionPublic):
    """The new subscription and its signing secret: shown here only, never again. Each delivery
    carries `Drip-Signature: t={unix seconds},v1={hex HMAC-SHA256}` keyed with it."""

    model_config = example(
        {
            "id": 1,
            "url": "https://crm.example.com/hooks/drip",
            "events": ["step.sent", "journey.converted"],
            "description": "CRM sync",
            "created_at": _T,
            "secret": "whsec_3q2-7wVmC1y0c1fS4m2fQ8ZpJtY7Xr0bq1Hk9l2m3n4",
        }
    )

    secret: str


class WebhookDeliveryPublic(BaseModel):
    """One journey event for one subscription and its attempts: `pending` while Temporal
    retries it (exponential backoff, for 3 days), then `delivered` or `failed`."""

    model_config = example(
        {
            "id": "whd_01KBCDXJ9V8Q2R4T6Y8W0Z2B4D",
            "event_id": "evt_5f0c6d1e2a3b4c5d6e7f8091a2b3c4d5",
            "type": "step.sent",
            "status": "delivered",
            "attempts": 3,
            "last_status_code": 200,
            "last_error": None,
            "created_at": _T,
            "last_attempt_at": _T,
            "delivered_at": _T,
        }
    )

    id: str
    event_id: str
    type: str
    status: str
    attempts: int
    last_status_code: int | None = None
    last_error: str | None = None
    created_at: SpecTime
    last_attempt_at: SpecTime | None = None
    delivered_at: SpecTime | None = None


class WebhookSubscriptionPage(CursorPage[WebhookSubscriptionPublic]):
    """A page of webhook subscriptions, oldest first (a cursor page)."""

    model_config = example(
        {
            "items": [{"id": 1, "url": "https://crm.example.com/hooks/drip",
                       "events": ["step.sent"], "description": "CRM sync", "created_at": _T}],
            "next_cursor": "WzFd",
        }
    )  # fmt: skip


class WebhookDeliveryPage(CursorPage[WebhookDeliveryPublic]):
    """A page of one subscription's deliveries, newest first (a cursor page)."""

    model_config = example(
        {
            "items": [{"id": "whd_01KBCDXJ9V8Q2R4T6Y8W0Z2B4D",
                       "event_id": "evt_5f0c6d1e2a3b4c5d6e7f8091a2b3c4d5", "type": "step.sent",
                       "status": "pending", "attempts": 2, "last_status_code": 500,
                       "last_error": "answered 500: oops", "created_at": _T,
                       "last_attempt_at": _T}],
            "next_cursor": None,
        }
    )  # fmt: skip


# --- simulation ------------------------------------------------------------------------------


class SimulationEventIn(Strict):
    """An event injected into the rehearsal `after_hours` after its start: engagement (`open`,
    `click` with `step_order` and for a click its `url`; `unsubscribe`, `bounce_hard`,
    `complaint`) or, with `type` "track", the product event `event` with its `properties`."""

    model_config = example({"after_hours": 26, "type": "open", "step_order": 1})

    after_hours: float = Field(ge=0, le=87840)  # ten years
    type: Literal["open", "click", "unsubscribe", "bounce_hard", "complaint", "track"]
    step_order: int | None = None
    url: str | None = None
    event: str | None = None
    properties: dict[str, Any] | None = None


class SimulationRequest(Strict):
    """One imaginary recipient (`email`, `fields`: a `timezone` field sets the zone of send
    windows), starting at `start_at` (default now; not in the past), on the live definition or
    the version `version` (a draft one too), with these events."""

    model_config = example(
        {"email": "maya@example.com", "fields": {"first_name": "Maya", "timezone": "Europe/Paris"},
         "events": [{"after_hours": 26, "type": "open", "step_order": 1}]}
    )  # fmt: skip

    email: str | None = None
    fields: dict[str, Any] | None = None
    start_at: datetime | None = None
    version: int | None = Field(default=None, ge=1)
    events: list[SimulationEventIn] = Field(default_factory=list, max_length=1000)


class SimulationStepOut(BaseModel):
    """A step as the rehearsal decided it: when, what (`sent`, its `alternative`, `skipped`),
    the subject of the message it would send (rendered with the request's fields), and why."""

    model_config = example(
        {"at": _T, "step_order": 1, "decision": "sent", "variant": None,
         "subject": "Welcome, Maya", "reason": "sent: no condition"}
    )  # fmt: skip

    at: datetime
    step_order: int
    decision: Literal["sent", "alternative", "skipped"]
    variant: str | None = None
    subject: str
    reason: str | None


class SimulationOut(BaseModel):
    """The rehearsal's timeline, how the journey ended and when. Nothing was sent or stored."""

    model_config = example(
        {"timeline": [{"at": _T, "step_order": 1, "decision": "sent", "variant": None,
                       "subject": "Welcome", "reason": "sent: no condition"}],
         "status": "completed", "ended_at": _T}
    )  # fmt: skip

    timeline: list[SimulationStepOut]
    status: str
    ended_at: datetime
