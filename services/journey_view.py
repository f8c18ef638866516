"""One recipient's journey as the API shows it: each step's decision with its one-sentence reason
and the events behind it, what the journey waits for, its conversion, its entry and version.

While the journey runs, the reasons and `waiting_for` are its workflow's own (the `progress`
query). Once it has finished there is no workflow to ask: the reasons are rebuilt from what the
database knows (the delivery rows, the step's condition, the engagement and tracked events
before the decision) and say so."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlmodel import Session, col, func, select

from domain import conditions
from domain.conditions import parse_utc, utc_text
from domain.journey import (
    POSITIVE_CONDITIONS,
    PRODUCT_CONDITIONS,
    ConditionPlan,
    ConditionType,
    Decision,
    EventType,
    Evidence,
    JourneyState,
    JourneyStatus,
    JourneyVersion,
    ProductEvent,
    WaitingFor,
    WaitingKind,
)
from mail.addresses import stored_form
from services.errors import NotFound
from services.events import signal_key
from services.journeys import Journeys
from storage.models import Campaign, Conversion, Delivery, Enrollment, Event, TrackedEvent
from storage.plans import read_plan, version_plan
from storage.tracked_events import events_since

FINISHED_NOTE = "(from the database: the journey has finished)"
UNRECORDED_NOTE = "(from the database: this journey's version records no reasons)"
MAX_EVIDENCE = 10  # a condition rests on its first events; the rest add nothing to the reason


@dataclass
class StepView:
    """One decided step: its delivery row, the engagement seen, and why it was decided so."""

    delivery: Delivery
    opened: bool
    clicked: bool
    clicked_urls: list[str]
    machine_opens: int
    machine_clicks: int
    reason: str
    evidence: list[Evidence] = field(default_factory=list)


@dataclass
class JourneyView:
    enrollment: Enrollment
    live: JourneyState | None  # None once finished (or when no worker answered)
    steps: list[StepView]
    waiting_for: WaitingFor | None
    conversion: Conversion | None
    version: int | None  # the JourneyVersion it runs; None once Temporal has forgotten it
    campaign_version: int = 1  # the campaign version it runs (services/versions.py)


def load_enrollment(
    session: Session, campaign_id: int, email: str, entry: int | None = None
) -> Enrollment:
    """The journey of `email` in the campaign: its latest entry, or entry number `entry`."""
    if session.get(Campaign, campaign_id) is None:
        raise NotFound("campaign", campaign_id)
    query = select(Enrollment).where(
        Enrollment.campaign_id == campaign_id, Enrollment.email == stored_form(email)
    )
    if entry is not None:
        query = query.where(Enrollment.entry == entry)
    enrollment = session.exec(query.order_by(col(Enrollment.entry).desc())).first()
    if enrollment is None:
        where = f"{email} in campaign {campaign_id}"
        raise NotFound("recipient", f"{where} (entry {entry})" if entry is not None else where)
    return enrollment


def page(
    session: Session,
    campaign_id: int,
    status: str | None,
    current_step: int | None,
    limit: int,
    offset: int,
) -> tuple[list[Enrollment], int]:
    """One page of the campaign's enrollments in id order (optionally in one status, at one
    step: who is where), and how many match."""
    if session.get(Campaign, campaign_id) is None:
        raise NotFound("campaign", campaign_id)
    where = [col(Enrollment.campaign_id) == campaign_id]
    if status is not None:
        where.append(col(Enrollment.status) == status)
    if current_step is not None:
        where.append(col(Enrollment.current_step) == current_step)
    total = session.exec(select(func.count()).select_from(Enrollment).where(*where)).one()
    rows = session.exec(
        select(Enrollment).where(*where).order_by(col(Enrollment.id)).limit(limit).offset(offset)
    ).all()
    return list(rows), total


async def read(
    session: Session, journeys: Journeys, campaign_id: int, email: str, entry: int | None = None
) -> JourneyView:
    """The journey, live from its workflow while it runs, from the database after (the
    database work on a thread: the event loop never blocks)."""
    enrollment = await asyncio.to_thread(load_enrollment, session, campaign_id, email, entry)
    running = enrollment.finished_at is None
    live = await journeys.progress(enrollment.workflow_id) if running else None
    steps, conversion = await asyncio.to_thread(_from_rows, session, enrollment, live)
    version = (live.version if live else 0) or await journeys.started_version(
        enrollment.workflow_id
    )
    return JourneyView(
        enrollment=enrollment,
        live=live,
        steps=steps,
        waiting_for=waiting_for(live),
        conversion=conversion,
        version=version,
        campaign_version=(live.campaign_version if live else 0)
        or await asyncio.to_thread(_campaign_version, session, enrollment),
    )


def _campaign_version(session: Session, enrollment: Enrollment) -> int:
    """The version the enrollment row says (0 there: the campaign's live one)."""
    if enrollment.campaign_version:
        return enrollment.campaign_version
    campaign = session.get(Campaign, enrollment.campaign_id)
    return campaign.live_version if campaign else 1


def waiting_for(live: JourneyState | None) -> WaitingFor | None:
    """What the journey waits for: its own words from JOURNEYS on; for a journey started on
    older code, what its state implies (a pause, or the next step's delay)."""
    if live is None or live.status != JourneyStatus.ACTIVE:
        return None
    if live.waiting_for is not None or live.version >= JourneyVersion.JOURNEYS:
        return live.waiting_for
    if live.paused:
        return WaitingFor(WaitingKind.PAUSED, "held: the campaign is paused", None)
    if live.next_step_due_at is None:
        return None
    step = live.current_step + 1
    return WaitingFor(
        WaitingKind.DELAY,
        f"step {step} is due at {live.next_step_due_at}",
        live.next_step_due_at,
        step_order=step,
    )


def _from_rows(
    session: Session, enrollment: Enrollment, live: JourneyState | None
) -> tuple[list[StepView], Conversion | None]:
    deliveries = session.exec(
        select(Delivery)
        .where(Delivery.enrollment_id == enrollment.id)
        .order_by(col(Delivery.step_order))
    ).all()
    events = session.exec(select(Event).where(Event.enrollment_id == enrollment.id)).all()
    told = {p.step_id: p for p in live.steps} if live else {}
    facts = _Facts(session, enrollment, events)
    views = []
    for d in deliveries:
        mine = [e for e in events if e.delivery_id == d.id]
        human = [e for e in mine if not e.machine]
        clicks = [e for e in human if e.type == EventType.CLICK]
        progress = told.get(d.step_id)
        if progress is not None and progress.reason:
            reason, evidence = progress.reason, progress.evidence
        else:
            reason, evidence = facts.explain(d)
            reason = f"{reason} {UNRECORDED_NOTE if live else FINISHED_NOTE}"
        views.append(
            StepView(
                delivery=d,
                opened=any(e.type in (EventType.OPEN, EventType.CLICK) for e in human),
                clicked=bool(clicks),
                clicked_urls=sorted({e.url for e in clicks if e.url}),
                machine_opens=sum(1 for e in mine if e.machine and e.type == EventType.OPEN),
                machine_clicks=sum(1 for e in mine if e.machine and e.type == EventType.CLICK),
                reason=reason,
                evidence=evidence,
            )
        )
    return views, session.get(Conversion, enrollment.id)


class _Facts:
    """What the database knows of one journey, to say why each of its steps was decided: in
    the workflow's own words (domain/conditions.py), over the campaign's plan and the events
    stored before each decision."""

    def __init__(self, session: Session, enrollment: Enrollment, events: Sequence[Event]) -> None:
        self.session = session
        self.enrollment = enrollment
        self.events = events
        plan = (  # the plan of the version it ran (0: the live one)
            version_plan(session, enrollment.campaign_id, enrollment.campaign_version)
            if enrollment.campaign_version
            else None
        ) or read_plan(session, enrollment.campaign_id)
        self.steps = {s.step_id: s for s in plan.steps} if plan else {}
        self.step_orders = {s.step_id: s.step_order for s in self.steps.values()}

    def explain(self, delivery: Delivery) -> tuple[str, list[Evidence]]:
        step = self.steps.get(delivery.step_id)
        condition = step.condition if step else None
        met = delivery.condition_met
        if condition is None or met is None:
            if delivery.decision == Decision.SENT:
                return "sent: no condition", []
            # decided by no condition: the frequency cap, a missing delay_until field
            return delivery.skip_reason or str(delivery.decision), []
        evidence: list[Evidence] = []
        if (condition.type in POSITIVE_CONDITIONS) == met:  # its thing happened
            evidence = self.evidence(condition, _aware(delivery.decided_at))
        alternative = delivery.decision == Decision.ALTERNATIVE
        words = conditions.reason(condition, met, alternative, evidence, self.step_orders)
        return words, evidence

    def evidence(self, condition: ConditionPlan, decided_at: datetime) -> list[Evidence]:
        """The events that make the condition's thing happen, up to the decision, oldest first:
        human opens (a click is one too) or clicks of the step asked about, or tracked events
        that count (domain/conditions.event_counts)."""
        if condition.type in PRODUCT_CONDITIONS:
            return self.tracked(condition, decided_at)
        clicks_only = condition.type in (ConditionType.CLICKED, ConditionType.NOT_CLICKED)
        found = [
            e
            for e in self.events
            if e.step_id == condition.step_id
            and not e.machine
            and (e.type == EventType.CLICK or (e.type == EventType.OPEN and not clicks_only))
            and (not clicks_only or not condition.url or e.url == condition.url)
            and _aware(e.occurred_at) <= decided_at
        ]
        found.sort(key=lambda e: _aware(e.occurred_at))
        return [
            Evidence(signal_key(e), e.type or "", utc_text(_aware(e.occurred_at)), e.step_id, e.url)
            for e in found[:MAX_EVIDENCE]
        ]

    def tracked(self, condition: ConditionPlan, decided_at: datetime) -> list[Evidence]:
        name = condition.event or ""
        since = _aware(self.enrollment.created_at)
        trigger = self.trigger()
        found = [
            event
            for event in map(
                _product_event, events_since(self.session, self.enrollment.email, [name], since)
            )
            if parse_utc(event.occurred_at) <= decided_at
            and conditions.event_counts(
                event, name, since, condition.where, condition.match, trigger
            )
        ]
        return [
            Evidence(e.event_id, e.name, utc_text(parse_utc(e.occurred_at)))
            for e in found[:MAX_EVIDENCE]
        ]

    def trigger(self) -> ProductEvent | None:
        """The tracked event that enrolled the journey (what `match` compares with)."""
        if self.enrollment.trigger_event_id is None:
            return None
        row = self.session.exec(
            select(TrackedEvent).where(TrackedEvent.event_id == self.enrollment.trigger_event_id)
        ).first()
        return _product_event(row) if row else None


def _product_event(row: TrackedEvent) -> ProductEvent:
    """As the journey sees it (activities/tracked.py): its time to the microsecond, since an
    event in the enrollment's second still counts only if it came after."""
    at = _aware(row.occurred_at).astimezone(UTC).isoformat()
    return ProductEvent(row.event_id, row.name, at, dict(row.properties or {}))


def _aware(value: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were written in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
