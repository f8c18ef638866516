"""SQLModel tables. Campaign definitions are written by the API; enrollments by the API when it
enrolls; deliveries by the send activities; events by the event and webhook endpoints."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class Template(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str
    html: str
    text: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class Campaign(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str
    status: str = Field(default="draft", index=True)
    status_reason: str | None = None
    # Counts status changes (services/campaigns.py): journeys keep the newest they have heard of.
    status_version: int = 0
    # The newest status_version told to the running journeys; the outbox tells the rest.
    broadcast_version: int = 0
    from_email: str | None = None
    from_name: str | None = None
    reply_to: str | None = None
    # Trigger: each tracked event of this name (matching trigger_where) enrolls the person.
    trigger_event: str | None = Field(default=None, index=True)
    trigger_where: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # Goal: the event that fulfils the campaign (a conversion; ends the journey when goal_exit).
    goal_event: str | None = Field(default=None, index=True)
    goal_where: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    goal_window_hours: float | None = None
    goal_exit: bool = True
    # Re-entry: a person may enter again once their last journey ended and the cooldown passed.
    reentry_allowed: bool = False
    reentry_cooldown_hours: float = 0
    # When its messages may go out (docs/features.md#when-a-message-may-go-out): the send
    # window {days, start, end, timezone, fallback_timezone?}, and how the frequency cap
    # applies ("apply" | "exempt") and what a capped step does ("defer" | "skip").
    send_window: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    frequency_cap: str = "apply"
    on_cap: str = "defer"
    # The version new enrollments start on: its steps are the Step rows (services/versions.py).
    live_version: int = 1
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class CampaignVersion(SQLModel, table=True):
    """A numbered version of a campaign's definition (services/versions.py): at most one
    draft; one live (the Step and Campaign rows hold the same); the rest retired. `definition`
    is the snapshot a journey on this version sends from: its steps as Step columns (new steps
    of a draft have negative ids until it is published) and the campaign's definition columns."""

    __tablename__ = "campaign_version"

    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True)
    number: int = Field(primary_key=True)
    status: str = "draft"  # draft | live | retired
    definition: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    policy: str | None = None  # stay | migrate | exit: how it was published
    # False while a migrate or exit has still to be told to the running journeys (the outbox
    # tells them if the publish's own batch signal did not go through).
    broadcast: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    published_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class Step(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    step_order: int
    subject: str
    delay_hours: float = 0
    template_id: int = Field(foreign_key="template.id", index=True)
    condition_type: str | None = None
    condition_step_id: int | None = None
    condition_url: str | None = None
    # performed / not_performed: the tracked event, property values, properties to match.
    condition_event: str | None = Field(default=None, index=True)
    condition_where: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    condition_match: list[str] | None = Field(default=None, sa_column=Column(JSON))
    condition_wait_hours: float | None = None  # wait-until: how long to wait for it to settle
    alt_subject: str | None = None
    alt_template_id: int | None = Field(default=None, foreign_key="template.id", index=True)
    # The step's own send window (over the campaign's), or none at all; due at a recipient
    # field (plus an offset) instead of after delay_hours.
    send_window: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    ignore_send_window: bool = False
    delay_until_field: str | None = None
    delay_until_offset_hours: float = 0
    # A/B test (docs/features.md#ab-variants): [{name, subject, template_id, weight} or
    # {name, holdout: true, weight}], and how the winner is chosen {metric, after_hours}.
    variants: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    winner: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class Enrollment(SQLModel, table=True):
    __table_args__ = (
        # One journey per entry: entry 1 always; more only where the campaign allows re-entry.
        UniqueConstraint(
            "campaign_id", "email", "entry", name="uq_enrollment_campaign_email_entry"
        ),
        Index("ix_enrollment_campaign_status", "campaign_id", "status"),
        # Who is where: ?current_step=N&status=active pages by id within one step.
        Index("ix_enrollment_campaign_status_step", "campaign_id", "status", "current_step", "id"),
        Index("ix_enrollment_unstarted", "workflow_started"),
        Index(
            "ix_enrollment_campaign_version_step",
            "campaign_id",
            "status",
            "campaign_version",
            "current_step",
        ),  # fmt: skip
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    email: str = Field(index=True)
    entry: int = 1
    fields: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # The tracked event that enrolled this journey through the campaign's trigger (its id).
    trigger_event_id: str | None = None
    status: str = "active"
    status_reason: str | None = None
    current_step: int = 0  # step_order of the last step decided; 0 before the first
    # The campaign version the journey runs; 0: the live one (set when another is published).
    campaign_version: int = 0
    workflow_id: str
    # False until Temporal has the journey: the API's outbox re-drives rows left unstarted.
    workflow_started: bool = False
    # First human open/click, set once on the event's first insert: stats read these columns.
    opened_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    clicked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class Delivery(SQLModel, table=True):
    """One step decided for one enrollment: sent, alternative, or skipped."""

    __table_args__ = (UniqueConstraint("enrollment_id", "step_id", name="uq_delivery_step"),)

    id: str = Field(primary_key=True)  # drip_delivery_id: opaque, no personal data
    enrollment_id: int = Field(foreign_key="enrollment.id", index=True)
    campaign_id: int = Field(index=True)
    step_id: int
    step_order: int
    decision: str  # sent | alternative | skipped
    condition_met: bool | None = None
    # pending -> sending -> sent; or skipped / bounced / suppressed
    status: str = "pending"
    subject: str | None = None
    message_id: str | None = Field(default=None, index=True)
    links: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    error: str | None = None
    # Why a step was skipped when no condition decided it (the frequency cap, a missing
    # delay_until field): the journey view's reason once the journey has finished.
    skip_reason: str | None = None
    decided_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    send_started_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    sent_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    variant: str | None = None  # the step's A/B variant this journey was given, by name


class VariantTest(SQLModel, table=True):
    """A step's A/B test under way: when its first message went, when its winner is due (the
    first send + the winner's after_hours), and the winner once chosen (services/variants.py)."""

    __tablename__ = "variant_test"

    step_id: int = Field(primary_key=True)
    campaign_id: int = Field(index=True)
    first_sent_at: datetime = Field(sa_type=DateTime(timezone=True))
    due_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True), index=True)
    winner: str | None = None
    chosen_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class Event(SQLModel, table=True):
    """An engagement event as received, stored once per (provider, dedupe_key)."""

    __table_args__ = (
        UniqueConstraint("provider", "dedupe_key", name="uq_event_dedupe"),
        Index("ix_event_unsignalled", "signalled"),
    )

    id: int | None = Field(default=None, primary_key=True)
    provider: str
    dedupe_key: str
    type: str | None = Field(default=None)  # normalised type; None: stored only
    raw_type: str
    delivery_id: str | None = Field(default=None, index=True)
    enrollment_id: int | None = Field(default=None, index=True)
    campaign_id: int | None = Field(default=None, index=True)
    step_id: int | None = None
    email: str | None = Field(default=None, index=True)
    url: str | None = None
    machine: bool = False
    machine_reason: str | None = None
    occurred_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    received_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    # Outbox: False until the journey has been signalled (or there is nothing to signal).
    signalled: bool = False
    raw: Any = Field(default=None, sa_column=Column(JSON, nullable=True))


class TrackedEvent(SQLModel, table=True):
    """Something a person did in the product (POST /api/track), stored once per event_id."""

    __tablename__ = "tracked_event"
    __table_args__ = (
        Index("ix_tracked_event_email_occurred", "email", "occurred_at"),
        Index("ix_tracked_event_email_name", "email", "name", "occurred_at"),
        Index("ix_tracked_event_unsignalled", "signalled"),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(unique=True, max_length=255)  # the client's, or generated
    email: str
    name: str = Field(max_length=128)
    properties: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    occurred_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    received_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    # Outbox: False until the journeys that listen to it have been signalled.
    signalled: bool = False


class Conversion(SQLModel, table=True):
    """A journey's goal reached within the window: at most one per journey, attributed to the
    last step sent before it (last touch; 0 when none was sent yet)."""

    enrollment_id: int = Field(primary_key=True)
    campaign_id: int = Field(index=True)
    step_id: int = 0
    step_order: int = 0
    event_id: str
    occurred_at: datetime = Field(sa_type=DateTime(timezone=True))
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class Suppression(SQLModel, table=True):
    email: str = Field(primary_key=True)
    reason: str
    source: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class IdempotencyRecord(SQLModel, table=True):
    """A client's `Idempotency-Key` and the first answer given to it (api/idempotency.py).
    The primary key makes a concurrent duplicate lose the insert instead of acting twice."""

    __tablename__ = "idempotency_record"

    scope: str = Field(primary_key=True, max_length=64)  # sha256 of the caller's credentials
    key: str = Field(primary_key=True, max_length=255)
    method: str
    path: str
    body_hash: str
    status_code: int | None = None  # None while the first request is still in progress
    response_body: str | None = None
    content_type: str | None = None
    created_at: datetime = Field(
        default_factory=utcnow, sa_type=DateTime(timezone=True), index=True
    )


class Lease(SQLModel, table=True):
    """Who runs a job that must run in one process at a time (storage/leases.py)."""

    __tablename__ = "lease"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=64)
    expires_at: datetime = Field(sa_type=DateTime(timezone=True))


class WebhookNonce(SQLModel, table=True):
    """A provider signature's single-use value and the payload it first came with
    (storage/webhook_nonces.py): a replay of the signature on another payload is refused."""

    __tablename__ = "webhook_nonce"

    provider: str = Field(primary_key=True, max_length=32)
    nonce: str = Field(primary_key=True, max_length=255)
    payload_sha256: str = Field(max_length=64)
    seen_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True), index=True)


class ErasedDelivery(SQLModel, table=True):
    """A delivery an erasure deleted: only its opaque id, which names nobody once the rows are
    gone. A provider event about it arriving later is stored without its address."""

    __tablename__ = "erased_delivery"

    id: str = Field(primary_key=True)
    erased_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class EnrollmentBatch(SQLModel, table=True):
    """A large enrollment (JSON or CSV) accepted at once and worked through by its batch
    workflow (workflows/enrollment_batch.py). The counters are kept by the batch activities."""

    __tablename__ = "enrollment_batch"

    id: int | None = Field(default=None, primary_key=True)
    token: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])  # in the workflow id
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    source: str  # api | csv
    filename: str | None = None
    status: str = Field(default="accepted", index=True)  # accepted -> running -> completed
    status_reason: str | None = None
    accepted: int = 0  # rows staged
    enrolled: int = 0  # new enrollments written
    started: int = 0  # of those, journeys started
    duplicates: int = 0  # already enrolled (earlier, or earlier in this batch)
    rejected: int = 0  # invalid or suppressed addresses
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class EnrollmentBatchRow(SQLModel, table=True):
    """One staged recipient of a batch: pending -> enrolled -> started, or duplicate/rejected.
    The state moves in the same transaction as the enrollment it writes, so a retried chunk
    never counts or starts a row twice. Rows other than rejected ones are pruned at the end."""

    __tablename__ = "enrollment_batch_row"
    __table_args__ = (
        Index("ix_enrollment_batch_row_batch_id", "batch_id", "id"),
        Index("ix_enrollment_batch_row_batch_state", "batch_id", "state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    batch_id: int = Field(foreign_key="enrollment_batch.id")
    row: int  # CSV: line number in the file (header = 1); JSON: index in `recipients`
    email: str
    fields: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: str = "pending"
    reason: str | None = None
    enrollment_id: int | None = Field(default=None, index=True)


class StatCounter(SQLModel, table=True):
    """Running totals behind stats and the funnel, bumped in the transaction that writes what
    they count (storage/counters.py): reading them costs the same at any campaign size."""

    __tablename__ = "stat_counter"

    campaign_id: int = Field(primary_key=True)
    step_id: int = Field(primary_key=True)  # 0: the campaign as a whole
    metric: str = Field(primary_key=True)
    value: int = 0


class DeliveryMilestone(SQLModel, table=True):
    """The first time a delivery was delivered, opened, clicked, bounced...: its funnel
    counters move only when this row is first inserted, so repeats and retries count once."""

    __tablename__ = "delivery_milestone"

    delivery_id: str = Field(primary_key=True)
    milestone: str = Field(primary_key=True)


class FrequencyCap(SQLModel, table=True):
    """The one frequency cap per address across all campaigns (PUT /api/settings/frequency-cap):
    at most `max_messages` in any `per_hours` (a rolling window)."""

    __tablename__ = "frequency_cap"

    id: int = Field(default=1, primary_key=True)  # one row: the cap
    max_messages: int
    per_hours: float
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class CapAddress(SQLModel, table=True):
    """One row per capped address, written first in every reservation for it: its row lock
    (PostgreSQL) or the write lock it takes (SQLite) makes check-and-reserve one act."""

    __tablename__ = "cap_address"

    email: str = Field(primary_key=True, max_length=320)
    reserved_at: datetime = Field(sa_type=DateTime(timezone=True))


class CapSlot(SQLModel, table=True):
    """A message counted against the frequency cap: one per (enrollment, step), at the time of
    its send (services/frequency.py)."""

    __tablename__ = "cap_slot"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_id", name="uq_cap_slot_step"),
        Index("ix_cap_slot_email_reserved_at", "email", "reserved_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320)
    enrollment_id: int
    step_id: int
    campaign_id: int
    reserved_at: datetime = Field(sa_type=DateTime(timezone=True))


class CapHold(SQLModel, table=True):
    """A step the frequency cap held back (deferred) or skipped, once per (enrollment, step):
    the rows behind the funnel's deferred_by_cap and skipped_by_cap."""

    __tablename__ = "cap_hold"

    enrollment_id: int = Field(primary_key=True)
    step_id: int = Field(primary_key=True)
    campaign_id: int = Field(index=True)
    outcome: str  # deferred | skipped
    held_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class WebhookSubscription(SQLModel, table=True):
    """A receiver of journey events (POST /api/webhook-subscriptions): the URL, the event types
    it asked for, and its signing secret, encrypted with the app's secret key
    (services/webhook_subscriptions.py): it must be readable to sign, never stored in clear."""

    __tablename__ = "webhook_subscription"

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(max_length=2048)
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    description: str | None = Field(default=None, max_length=500)
    secret_encrypted: str
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class WebhookDelivery(SQLModel, table=True):
    """One journey event for one subscription: written in the transaction of the fact it tells
    (services/webhooks_out.emit), POSTed by its own workflow (workflows/webhook_delivery.py),
    every attempt counted here. `body` is the exact JSON every attempt sends and signs."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("subscription_id", "event_id", name="uq_webhook_delivery_event"),
        Index("ix_webhook_delivery_subscription", "subscription_id", "id"),
        Index("ix_webhook_delivery_unhanded", "handed_over"),
    )

    id: str = Field(primary_key=True, max_length=40)  # whd_<ULID>: never reused, so neither
    subscription_id: int  # is its workflow's id
    event_id: str = Field(max_length=64)  # the body's `id`: stable across retries of the fact
    type: str = Field(max_length=64)
    email: str | None = Field(default=None, index=True)  # whom it tells about: for erasure
    body: str
    status: str = "pending"  # pending -> delivered, or failed once the retries ran out
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    last_attempt_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    delivered_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # Outbox: False until its workflow has been started (services/outbox.py re-drives the rest).
    handed_over: bool = False
