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
from typing import Any

from sqlmodel import Session, col, func, select

from domain.journey import (
    POSITIVE_CONDITIONS,
    PRODUCT_CONDITIONS,
    ConditionType,
    Decision,
    EventType,
    Evidence,
    JourneyState,
    JourneyStatus,
    JourneyVersion,
    WaitingFor,
    WaitingKind,
)
from mail.addresses import stored_form
from services.errors import NotFound
from services.events import signal_key
from services.journeys import Journeys
from storage.models import Campaign, Conversion, Delivery, Enrollment, Event, Step, TrackedEvent

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
    )


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
    steps = {
        s.id: s
        for s in session.exec(select(Step).where(Step.campaign_id == enrollment.campaign_id))
    }
    told = {p.step_id: p for p in live.steps} if live else {}
    facts = _Facts(session, enrollment, steps, events)
    views = []
    for d in deliveries:
        mine = [e for e in events if e.delivery_id == d.id]
        human = [e for e in mine if not e.machine]
        clicks = [e for e in human if e.type == EventType.CLICK]
        progress = told.get(d.step_id)
        if progress is not None and progress.reason:
            reason, evidence = progress.reason, progress.evidence
        else:
            reason, evidence = facts.explain(d, steps.get(d.step_id))
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
    """What the database knows of one journey, to say why each of its steps was decided."""

    def __init__(
        self,
        session: Session,
        enrollment: Enrollment,
        steps: dict[int | None, Step],
        events: Sequence[Event],
    ) -> None:
        self.session = session
        self.enrollment = enrollment
        self.order_of = {s.id: s.step_order for s in steps.values()}
        self.events = events
        self._trigger: dict[str, Any] | None = None

    def explain(self, delivery: Delivery, step: Step | None) -> tuple[str, list[Evidence]]:
        """A reason in the workflow's form — "alternative sent: not_opened(step 2) failed — human
        open at … (id)" — and its evidence: the events before the decision that settle it."""
        decided = {
            Decision.SENT: "sent",
            Decision.ALTERNATIVE: "alternative sent",
            Decision.SKIPPED: "skipped",
        }.get(Decision(delivery.decision), delivery.decision)
        if step is None or not step.condition_type:
            return f"{decided}: no condition", []
        kind = ConditionType(step.condition_type)
        words = self.condition_words(step)
        if delivery.condition_met is None:
            return f"{decided}", []
        met = delivery.condition_met
        positive = kind in POSITIVE_CONDITIONS
        if positive == met:  # its thing happened: a positive one met, a negative one failed
            evidence = self.evidence(kind, step, _aware(delivery.decided_at))
            outcome = "met" if met else "failed"
            because = f" — {_phrase(evidence[0])}" if evidence else ""
            return f"{decided}: {words} {outcome}{because}", evidence
        within = f" within {step.condition_wait_hours:g} h" if step.condition_wait_hours else ""
        if met:
            return f"{decided}: {words} met — {self.nothing(kind, step)}{within}", []
        return f"{decided}: {words} not met{within}", []

    def condition_words(self, step: Step) -> str:
        """`not_opened(step 2)`, `clicked(step 1, https://…)`,
        `performed(order.completed, where plan=pro, match cart_id)`."""
        kind = ConditionType(step.condition_type or "")
        if kind in PRODUCT_CONDITIONS:
            parts = [step.condition_event or "?"]
            if step.condition_where:
                parts.append(
                    "where " + ", ".join(f"{k}={v}" for k, v in step.condition_where.items())
                )
            if step.condition_match:
                parts.append("match " + ", ".join(step.condition_match))
        else:
            parts = [f"step {self.order_of.get(step.condition_step_id, '?')}"]
            if step.condition_url:
                parts.append(step.condition_url)
        return f"{kind.value}({', '.join(parts)})"

    def nothing(self, kind: ConditionType, step: Step) -> str:
        if kind in PRODUCT_CONDITIONS:
            return f"no {step.condition_event}"
        return "no human click" if kind == ConditionType.NOT_CLICKED else "no human open"

    def evidence(self, kind: ConditionType, step: Step, decided_at: datetime) -> list[Evidence]:
        """The events that make the condition's thing happen, up to the decision, oldest first."""
        if kind in PRODUCT_CONDITIONS:
            return self.tracked(step, decided_at)
        clicks_only = kind in (ConditionType.CLICKED, ConditionType.NOT_CLICKED)
        found = [
            e
            for e in self.events
            if e.step_id == step.condition_step_id
            and not e.machine
            and (e.type == EventType.CLICK or (e.type == EventType.OPEN and not clicks_only))
            and (not clicks_only or not step.condition_url or e.url == step.condition_url)
            and _aware(e.occurred_at) <= decided_at
        ]
        found.sort(key=lambda e: _aware(e.occurred_at))
        return [
            Evidence(signal_key(e), e.type or "", _iso(e.occurred_at), e.step_id, e.url)
            for e in found[:MAX_EVIDENCE]
        ]

    def tracked(self, step: Step, decided_at: datetime) -> list[Evidence]:
        rows = self.session.exec(
            select(TrackedEvent)
            .where(
                TrackedEvent.email == self.enrollment.email,
                TrackedEvent.name == step.condition_event,
                col(TrackedEvent.occurred_at) >= self.enrollment.created_at,
                col(TrackedEvent.occurred_at) <= decided_at,
            )
            .order_by(col(TrackedEvent.occurred_at))
        ).all()
        wanted = dict(step.condition_where or {})
        if step.condition_match:
            trigger = self.trigger_properties()
            wanted.update({name: trigger.get(name) for name in step.condition_match})
        found = [r for r in rows if all(r.properties.get(k) == v for k, v in wanted.items())]
        return [Evidence(r.event_id, r.name, _iso(r.occurred_at)) for r in found[:MAX_EVIDENCE]]

    def trigger_properties(self) -> dict[str, Any]:
        if self._trigger is None:
            row = self.session.exec(
                select(TrackedEvent).where(
                    TrackedEvent.event_id == self.enrollment.trigger_event_id
                )
            ).first()
            self._trigger = dict(row.properties) if row else {}
        return self._trigger


def _phrase(evidence: Evidence) -> str:
    """`human open at 2026-12-03T10:02:11Z (id)`, `order.completed at … (evt_…)`."""
    if evidence.type in (EventType.OPEN, EventType.CLICK):
        what = f"human {evidence.type}" + (f" on {evidence.url}" if evidence.url else "")
    else:
        what = evidence.type
    return f"{what} at {evidence.at} ({evidence.event_id})"


def _aware(value: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were written in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _iso(value: datetime) -> str:
    return _aware(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
