"""The recipient journey's boundary types: what crosses into and out of the workflow.

Stdlib only, so the workflow sandbox passes it through cheaply. No postponed annotations: the
data converter resolves a dataclass's type hints on every decode, and real types cost nothing to
resolve where strings must be evaluated each time (docs/performance.md).
"""

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

TASK_QUEUE = "drip-journeys"
# Sends run on their own queue so DRIP_SEND_RATE can cap them with Temporal's task-queue rate limit.
SEND_TASK_QUEUE = "drip-send"


def workflow_id(campaign_id: int, email: str, entry: int = 1) -> str:
    """The one id of a recipient's journey: enrolling twice can never start two. A campaign
    that allows re-entry gives the n-th entry (n > 1) its own id, `...-{email}#{n}`."""
    base = f"drip-campaign-{campaign_id}-{email.strip().lower()}"
    return base if entry == 1 else f"{base}#{entry}"


def parse_workflow_id(value: str) -> tuple[int, str, int] | None:
    """The inverse of `workflow_id`: (campaign id, email, entry), or None for any other id. An
    address may hold a `#` itself, but never in its domain: `#n` after the `@` is the entry."""
    prefix, _, rest = value.partition("drip-campaign-")
    campaign, _, email = rest.partition("-")
    if prefix or not campaign.isdigit() or not email:
        return None
    address, mark, entry = email.rpartition("#")
    if mark and "@" in address and entry.isdigit() and int(entry) > 1:
        return int(campaign), address, int(entry)
    return int(campaign), email, 1


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"


class JourneyStatus(StrEnum):
    """Where a journey stands: running, or how it ended."""

    ACTIVE = "active"
    COMPLETED = "completed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    REMOVED = "removed"
    ARCHIVED = "archived"
    SUPPRESSED = "suppressed"
    CONVERTED = "converted"  # a goal event ended it: counted as completed in the spec's stats
    EXITED = "exited"  # a new version was published with the exit policy (services/versions.py)


class DeliveryStatus(StrEnum):
    """A delivery row's status, as the send activity (activities/sending.py) writes it."""

    PENDING = "pending"
    SENDING = "sending"  # leased, before the point of no return: a dead attempt is resent
    HANDING_OVER = "handing_over"  # the terminator may be on the wire: the server may have it
    SENT = "sent"
    UNCERTAIN = "uncertain"  # a dead attempt past the point of no return, held (not resent)
    FAILED = "failed"  # the server refused the message for good (size, content)
    BOUNCED = "bounced"  # the SMTP server refused the recipient
    SKIPPED = "skipped"  # written by record_skip (activities/bookkeeping.py)
    HOLDOUT = "holdout"  # an A/B holdout: decided and measured, never sent (services/variants.py)


class SuppressionReason(StrEnum):
    UNSUBSCRIBE = "unsubscribe"
    BOUNCE_HARD = "bounce_hard"
    COMPLAINT = "complaint"
    # Any other reason is an operator's own words (POST /api/suppressions).


# Suppression reason -> how a journey it stops ends.
SUPPRESSION_EXIT: dict[str, JourneyStatus] = {
    SuppressionReason.UNSUBSCRIBE: JourneyStatus.UNSUBSCRIBED,
    SuppressionReason.BOUNCE_HARD: JourneyStatus.BOUNCED,
    SuppressionReason.COMPLAINT: JourneyStatus.COMPLAINED,
}


class ConditionType(StrEnum):
    """What a condition asks: of an earlier step (opened, clicked), or of the product (performed:
    a tracked event since enrollment)."""

    OPENED = "opened"
    NOT_OPENED = "not_opened"
    CLICKED = "clicked"
    NOT_CLICKED = "not_clicked"
    PERFORMED = "performed"
    NOT_PERFORMED = "not_performed"


# The conditions met when their thing happens; the others (`not_*`) fail when it happens.
POSITIVE_CONDITIONS = frozenset(
    {ConditionType.OPENED, ConditionType.CLICKED, ConditionType.PERFORMED}
)
# The conditions on the product (a tracked event); the others ask about an earlier step.
PRODUCT_CONDITIONS = frozenset({ConditionType.PERFORMED, ConditionType.NOT_PERFORMED})


class EventType(StrEnum):
    """The kind of an engagement or delivery event."""

    DELIVERED = "delivered"
    OPEN = "open"
    CLICK = "click"
    BOUNCE_HARD = "bounce_hard"
    BOUNCE_SOFT = "bounce_soft"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"


# Events that end a journey whatever came before them, and the status they end it with.
TERMINAL_EVENTS: dict[str, JourneyStatus] = {
    EventType.BOUNCE_HARD: JourneyStatus.BOUNCED,
    EventType.COMPLAINT: JourneyStatus.COMPLAINED,
    EventType.UNSUBSCRIBE: JourneyStatus.UNSUBSCRIBED,
}


class Decision(StrEnum):
    """What was decided for a step: its message sent, its alternative sent, or skipped."""

    SENT = "sent"
    ALTERNATIVE = "alternative"
    SKIPPED = "skipped"


@dataclass
class ConditionPlan:
    type: ConditionType
    step_id: int  # the step an engagement condition asks about; 0 for performed/not_performed
    url: str | None = None
    # performed / not_performed: the tracked event's name, property values it must have, and
    # property names whose values must equal those of the event that enrolled the journey.
    event: str | None = None
    where: dict[str, Any] | None = None
    match: list[str] | None = None
    # Wait-until: wait up to this long for the outcome to settle once the step is due.
    wait_seconds: float | None = None


@dataclass
class SendWindowPlan:
    """When a message may go out (domain/timing.py reads it)."""

    days: list[str]  # mon..sun
    start: str  # HH:MM wall clock
    end: str  # HH:MM; start > end crosses midnight
    timezone: str  # an IANA zone, or "recipient": the recipient's `timezone` field
    fallback_timezone: str | None = None


@dataclass
class DelayUntilPlan:
    """A step due at a date in a recipient field rather than after a delay."""

    field: str
    offset_hours: float = 0.0


@dataclass
class StepPlan:
    step_id: int
    step_order: int
    delay_seconds: float
    condition: ConditionPlan | None = None
    has_alternative: bool = False
    delay_until: DelayUntilPlan | None = None
    send_window: SendWindowPlan | None = None  # overrides the campaign's
    ignore_send_window: bool = False


@dataclass
class GoalPlan:
    """The event that fulfils the campaign's purpose."""

    event: str
    where: dict[str, Any] | None = None
    window_seconds: float = 0.0  # a conversion counts within this of the last message sent
    exit: bool = True  # the goal ends the journey (status converted)


@dataclass
class JourneyPlan:
    campaign_id: int
    steps: list[StepPlan]
    goal: GoalPlan | None = None
    send_window: SendWindowPlan | None = None
    frequency_cap: str = "apply"  # apply | exempt
    on_cap: str = "defer"  # defer | skip
    version: int = 0  # the campaign version these steps are (0: before versions existed)

    def events_named(self) -> set[str]:
        """The tracked events this journey listens to: its conditions' and its goal's."""
        names = {s.condition.event for s in self.steps if s.condition and s.condition.event}
        if self.goal is not None:
            names.add(self.goal.event)
        return names


class ActivityName:
    """The journey's activities, by the names they are registered under. Every recorded
    history names them: never rename one."""

    LOAD_PLAN = "load_plan"
    RECORD_SKIP = "record_skip"
    FINISH_JOURNEY = "finish_journey"
    SEND_STEP = "send_step"
    LOAD_TRACKED_EVENTS = "load_tracked_events"  # events since enrollment (journeys issue)
    # When a step may go out (timing issue): its date or window opening, computed once and
    # kept in the history; and the frequency cap's atomic check-and-reserve.
    SEND_TIME = "compute_send_time"
    RESERVE_CAP_SLOT = "reserve_cap_slot"
    # A campaign version's plan, read when a journey migrates to it (versions issue).
    LOAD_VERSION_PLAN = "load_version_plan"


class JourneyVersion(IntEnum):
    """Which code path a journey runs, fixed in its input at its start for its whole life, so
    that journeys started on older code finish on the newer one as they began. The coming
    journey features extend it; a workflow change that history cannot tell apart gets a new
    version here (or `workflow.patched`)."""

    SCHEDULED_BOOKKEEPING = 1  # database bookkeeping as scheduled activities; plan loaded
    LOCAL_BOOKKEEPING = 2  # bookkeeping as local activities (docs/performance.md); plan loaded
    PINNED_PLAN = 3  # the campaign's plan carried in the input
    # Product events, wait-until, goals and the reason of every decision (docs/features.md).
    JOURNEYS = 4
    # Send windows, delay until a date, the frequency cap (docs/features.md).
    TIMING = 5
    # Campaign versions: a journey switches to a version published with `migrate` at its next
    # step boundary (docs/features.md).
    VERSIONS = 6
    # The database leads. A step's progress no longer upserts `DripStep` (one visibility write
    # per message, docs/performance.md): the database's current step answers "who is at step
    # N". And a send finds a `migrate` its journey has not been told of yet (the batch signal
    # reaches 100,000 journeys in minutes, not at once) from the enrollment's version, and
    # answers SWITCH: the journey switches first, so a removed step is never sent.
    STEP_AND_VERSION_IN_DATABASE = 7
    # The send takes the step's frequency-cap slot itself (StepInput.on_cap), in the attempt
    # that sends: no local activity and marker per step before it (docs/performance.md). A
    # refusal answers CAPPED, and the journey defers or skips as before.
    CAP_IN_SEND = 8
    # A pause signalled while a step's send is out (or in the activation of its answer)
    # outlives the answer: the answer clears `paused` only if no status change was signalled
    # meanwhile. Before, a send that had read the campaign active cleared a pause that came
    # after that read (the journey said "not paused"; its next send was still held, by the
    # database's status).
    PAUSE_OUTLIVES_SEND = 9


CURRENT_JOURNEY_VERSION = JourneyVersion.PAUSE_OUTLIVES_SEND


@dataclass
class ProductEvent:
    """A tracked product event (POST /api/track), as a journey sees it: signalled (`on_tracked`),
    read back since enrollment (`load_tracked_events`), or the event that enrolled the journey."""

    event_id: str
    name: str
    occurred_at: str  # ISO 8601, UTC
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrackedEventsQuery:
    """What `load_tracked_events` reads: a person's tracked events of these names that
    occurred at or after `since` (ISO 8601: the enrollment), oldest first."""

    email: str
    names: list[str]
    since: str
    enrollment_id: int = 0


@dataclass
class SendTimeQuery:
    """What `compute_send_time` answers, from the recipient's fields as they are now: with
    `delay_until`, when the step is due (`at`: now, for "already past"); else when `window`
    next opens at or after `at`."""

    enrollment_id: int
    at: str  # ISO 8601
    window: SendWindowPlan | None = None
    delay_until: DelayUntilPlan | None = None


@dataclass
class SendTimeAnswer:
    """`at` (ISO 8601; None: skip the step, `reason` says why), the zone it was read in."""

    at: str | None
    reason: str
    zone: str | None = None


@dataclass
class CapRequest:
    """A slot under the frequency cap for this step's message, sent at `at`."""

    enrollment_id: int
    step_id: int
    campaign_id: int
    email: str
    at: str  # ISO 8601
    on_cap: str = "defer"


@dataclass
class CapAnswer:
    granted: bool
    reason: str
    next_free_at: str | None = None  # ISO 8601, when not granted


@dataclass
class RecipientInput:
    campaign_id: int
    enrollment_id: int
    email: str
    # How long a paused journey waits for a resume signal before re-reading the status itself.
    pause_recheck_seconds: float = 3600.0
    send_task_queue: str = SEND_TASK_QUEUE
    # Before `version`, these two said it: still written, so older code reads new inputs right.
    local_bookkeeping: bool = False
    # The campaign's plan, pinned at the start (steps never change once a campaign is active).
    # None: the journey loads it itself, as journeys started before it was carried here did.
    plan: JourneyPlan | None = None
    # A JourneyVersion; 0 in inputs recorded before the field existed (the data converter
    # defaults a missing field): see journey_version().
    version: int = 0
    # From JOURNEYS on: when the enrollment was written (ISO 8601; events before it never
    # count), which entry into the campaign this is, and the tracked event that enrolled it.
    enrolled_at: str | None = None
    entry: int = 1
    trigger: ProductEvent | None = None

    def journey_version(self) -> JourneyVersion:
        if self.version:
            return JourneyVersion(self.version)
        if not self.local_bookkeeping:
            return JourneyVersion.SCHEDULED_BOOKKEEPING
        if self.plan is None:
            return JourneyVersion.LOCAL_BOOKKEEPING
        return JourneyVersion.PINNED_PLAN


@dataclass
class EngagementSignal:
    """One engagement event for the journey; `event_id` dedupes provider retries."""

    event_id: str
    type: str
    step_id: int | None = None
    url: str | None = None
    machine: bool = False


@dataclass
class StepInput:
    enrollment_id: int
    step_id: int
    step_order: int
    decision: Decision
    condition_met: bool | None = None
    # From TIMING on, a skip's reason when no condition decided it (the frequency cap, a
    # delay_until field missing): kept on the delivery row for the journey view.
    reason: str | None = None
    # From VERSIONS on: the campaign version whose content to send (0: the enrollment's).
    campaign_version: int = 0
    # From STEP_AND_VERSION_IN_DATABASE on: the journey takes a SWITCH answer.
    switchable: bool = False
    # From CAP_IN_SEND on: the campaign's on_cap (defer | skip) when the send is to take a slot
    # under the frequency cap first; None: exempt, or the journey took it (older journeys).
    on_cap: str | None = None


class StepOutcome(StrEnum):
    DONE = "done"  # sent, alternative sent, or skipped as decided
    HELD = "held"  # campaign paused: try again once it is active
    ENDED = "ended"  # the journey must end (see StepResult.exit_status)
    # Nothing sent: the journey was migrated to a newer version (StepResult.campaign_version)
    # it has not heard of; it switches, then decides the step of that version.
    SWITCH = "switch"
    # From CAP_IN_SEND on: nothing sent, the frequency cap is full for this address
    # (StepResult.reason; StepResult.next_free_at when a slot frees).
    CAPPED = "capped"


@dataclass
class StepResult:
    outcome: StepOutcome
    delivery_id: str | None = None
    exit_status: JourneyStatus | None = None
    reason: str | None = None
    # With HELD: the campaign's status version the activity read (see CampaignChange).
    status_version: int = 0
    # With SWITCH: the campaign version the journey is on now.
    campaign_version: int = 0
    # With CAPPED: when the cap's next slot for the address frees (ISO 8601).
    next_free_at: str | None = None


@dataclass
class CampaignChange:
    """A campaign's new status, broadcast to its running journeys. `version` counts the
    campaign's status changes: batch signals can arrive out of order, and a step's HELD answer
    can cross a resume in flight, so a journey keeps only the newest it has heard of."""

    status: CampaignStatus
    version: int


@dataclass
class FinishInput:
    enrollment_id: int
    status: JourneyStatus
    reason: str | None = None


@dataclass
class Evidence:
    """What a decision rests on: an engagement or tracked event, by id and time."""

    event_id: str
    type: str  # open | click | a tracked event's name
    at: str | None = None  # ISO 8601
    step_id: int | None = None
    url: str | None = None


@dataclass
class StepProgress:
    step_id: int
    step_order: int
    decision: Decision
    condition_met: bool | None
    decided_at: str
    delivery_id: str | None = None
    # From JOURNEYS on: one sentence saying why, and the events it rests on.
    reason: str | None = None
    evidence: list[Evidence] = field(default_factory=list)


class WaitingKind(StrEnum):
    """What a journey waits for before its next step."""

    DELAY = "delay"
    DATE = "date"
    SEND_WINDOW = "send_window"
    WAIT_UNTIL = "wait_until"
    FREQUENCY_CAP = "frequency_cap"
    PAUSED = "paused"


@dataclass
class WaitingFor:
    kind: WaitingKind
    reason: str  # one sentence, also the workflow's current details in the Temporal UI
    until: str | None = None  # ISO 8601; None: until a signal (a pause)
    step_order: int | None = None
    condition: str | None = None  # the condition being waited on, in words
    zone: str | None = None  # the time zone a send window or date was read in


@dataclass
class JourneyState:
    """What the `progress` query returns: the journey as it stands now."""

    status: str
    current_step: int
    next_step_due_at: str | None
    paused: bool
    steps: list[StepProgress] = field(default_factory=list)
    opened_steps: list[int] = field(default_factory=list)
    clicked: dict[str, list[str]] = field(default_factory=dict)
    exit_reason: str | None = None
    events_counted: int = 0  # distinct engagement events received
    waiting_for: WaitingFor | None = None  # JOURNEYS on; None when nothing is pending
    version: int = 0  # the JourneyVersion the journey runs
    campaign_version: int = 0  # the campaign version it runs (0: before versions existed)
