"""A/B variants at send time: which variant of a step a journey gets, holdouts, and the winner.

The send activity asks `choose` when it builds a step's message: the variant is a deterministic
function of (campaign, step, email) (domain/variants.py) — the same on retry, replay and
re-entry, and a retry keeps the variant its delivery row already has — until the step's winner
is chosen, after which every journey reaching the step gets the winner. A holdout is recorded
as a delivery decided but never sent (status `holdout`), so its conversions are measured.

The winner: a tested step's first send opens its `VariantTest`, due `after_hours` later. The
outbox round (`decide_due`, one process at a time under its lease) chooses every winner that is
due, and a send that finds its test due but undecided chooses it first, so no journey reaching
the step after the due time gets anything but the winner, whether or not the outbox has run.
The choice is one conditional write: two choosers agree on the first one written. A send reads
the time from Temporal (`clock`), so on the time-skipping server the window passes with the
skipped time, as the journey's delays do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio import activity

from domain.journey import DeliveryStatus, StepInput, StepOutcome, StepResult
from domain.variants import WinnerMetric, best, pick, point
from services import messages
from storage import counters
from storage.counters import Metric, bump, bump_variant, variant_metric
from storage.db import session_scope
from storage.inserts import insert_ignoring_conflicts
from storage.models import Delivery, Enrollment, Step, VariantTest, utcnow
from storage.tracked_events import as_utc


def clock() -> datetime:
    """Now, by Temporal's clock in a send (when its attempt was scheduled: the skipped time on
    the time-skipping server, so a winner's window passes for a rehearsed or tested journey as
    its delays do); the wall clock elsewhere (the outbox round)."""
    if activity.in_activity():
        return activity.info().current_attempt_scheduled_time
    return utcnow()


@dataclass(frozen=True)
class Variant:
    """A variant as the send uses it: the message it sends (a holdout: none)."""

    name: str
    subject: str
    template_id: int
    holdout: bool = False


def variants_of(step: Step) -> list[Variant]:
    return [
        Variant(
            v["name"],
            v.get("subject") or step.subject,
            v.get("template_id") or step.template_id,
            bool(v.get("holdout")),
        )
        for v in step.variants or []
    ]


def choose(session: Session, step: Step, email: str, given: str | None = None) -> Variant | None:
    """The variant of `step` this address gets (None: the step is not split-tested); `given`:
    the one its delivery row already has, which a retry keeps."""
    options = {v.name: v for v in variants_of(step)}
    if not options:
        return None
    if given in options:
        return options[given]
    winner = winner_of(session, step)
    if winner in options:
        return options[winner]
    return draw(step, email)


def draw(step: Step, email: str) -> Variant | None:
    """The variant this address draws before any winner (no database: a rehearsal uses it)."""
    options = variants_of(step)
    if not options:
        return None
    weights = [float(v["weight"]) for v in step.variants or []]
    return options[pick(weights, point(step.campaign_id, step.id or 0, email))]


def message_of(
    session: Session, step: Step, email: str, alternative: bool, given: str | None
) -> tuple[Variant | None, str, int]:
    """What a journey's step sends: its variant (None: untested, or the alternative), subject
    template and template id."""
    variant = None if alternative else choose(session, step, email, given)
    if variant is not None:
        return variant, variant.subject, variant.template_id
    return None, messages.subject_of(step, alternative), messages.template_id(step, alternative)


def winner_of(session: Session, step: Step) -> str | None:
    """The step's winner: chosen now if it is due and nobody has chosen it yet."""
    if step.winner is None:
        return None
    test = session.get(VariantTest, step.id)
    if test is None:
        return None
    if test.winner is None and test.due_at is not None and as_utc(test.due_at) <= clock():
        return decide(session, step, test)
    return test.winner


def decide(session: Session, step: Step, test: VariantTest) -> str:
    """Choose the winner by the step's metric (ties to the first variant listed) and record it,
    unless another chooser got there first: then theirs."""
    assert step.winner is not None
    metric = WinnerMetric(step.winner["metric"])
    counts = counters.read(session, step.campaign_id)
    rates = [
        (v.name, figures(counts, step.id or 0, v.name)[metric])
        for v in variants_of(step)
        if not v.holdout
    ]
    chosen = best(rates)
    taken = session.execute(
        update(VariantTest)
        .where(col(VariantTest.step_id) == step.id, col(VariantTest.winner).is_(None))
        .values(winner=chosen, chosen_at=clock())
    )
    session.expire(test)
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        return test.winner or chosen
    return chosen


def decide_due(engine: Engine) -> int:
    """Choose every winner whose time has come (the outbox round); how many were chosen."""
    chosen = 0
    with session_scope(engine) as session:
        due = session.exec(
            select(VariantTest).where(
                col(VariantTest.winner).is_(None), col(VariantTest.due_at) <= utcnow()
            )
        ).all()
        for test in due:
            step = session.get(Step, test.step_id)
            if step is not None and step.winner is not None and step.variants:
                decide(session, step, test)
                chosen += 1
    return chosen


def figures(counts: dict[tuple[int, str], int], step_id: int, name: str) -> dict[str, Any]:
    """A variant's funnel from the counters: journeys given it, sent, delivered, opened,
    clicked, converted, and the rates (opens and clicks over sent, conversions over journeys)."""

    def count(metric: Metric) -> int:
        return counts.get((step_id, variant_metric(metric, name)), 0)

    assigned, sent = count(Metric.REACHED), count(Metric.SENT)
    opened, clicked, converted = (
        count(Metric.OPENED),
        count(Metric.CLICKED),
        count(Metric.CONVERTED),
    )
    return {
        "assigned": assigned,
        "sent": sent,
        "delivered": count(Metric.DELIVERED),
        "opened": opened,
        "clicked": clicked,
        "converted": converted,
        WinnerMetric.OPEN_RATE: round(opened / sent, 3) if sent else 0,
        WinnerMetric.CLICK_RATE: round(clicked / sent, 3) if sent else 0,
        WinnerMetric.CONVERSION_RATE: round(converted / assigned, 3) if assigned else 0,
    }


def tests_of(session: Session, campaign_id: int) -> dict[int, VariantTest]:
    """{step id: its A/B test under way} for a campaign."""
    rows = session.exec(select(VariantTest).where(VariantTest.campaign_id == campaign_id))
    return {t.step_id: t for t in rows}


def count_given(session: Session, step: Step, delivery: Delivery) -> None:
    """A delivery row just made for a split-tested step: count it for its variant, and open the
    step's test at its first send (its winner due `after_hours` from now)."""
    if delivery.variant is None:
        return
    bump_variant(session, delivery.campaign_id, delivery.step_id, delivery.variant,
                 Metric.REACHED)  # fmt: skip
    if session.get(VariantTest, delivery.step_id) is None:
        now = clock()
        after = step.winner["after_hours"] if step.winner else None
        due = now + timedelta(hours=after) if after is not None else None
        row = {"step_id": delivery.step_id, "campaign_id": delivery.campaign_id,
               "first_sent_at": now, "due_at": due}  # fmt: skip
        insert_ignoring_conflicts(session, VariantTest, [row], "step_id")


def hold_out(  # noqa: PLR0913
    engine: Engine,
    step: StepInput,
    plan_step: Step,
    delivery_id: str,
    new: bool,
    variant: Variant,
) -> StepResult:
    """A journey in the holdout: its delivery is recorded decided but not sent (once)."""
    with session_scope(engine) as session:
        enrollment = session.get(Enrollment, step.enrollment_id)
        assert enrollment is not None
        enrollment.current_step = max(enrollment.current_step, step.step_order)
        session.add(enrollment)
        row = Delivery(
            id=delivery_id,
            enrollment_id=step.enrollment_id,
            campaign_id=enrollment.campaign_id,
            step_id=step.step_id,
            step_order=step.step_order,
            decision=step.decision,
            condition_met=step.condition_met,
            status=DeliveryStatus.HOLDOUT,
            variant=variant.name,
        )
        if new and insert_ignoring_conflicts(session, Delivery, [row.model_dump()]):
            bump(session, row.campaign_id, row.step_id, Metric.REACHED)
            count_given(session, plan_step, row)
    return StepResult(StepOutcome.DONE, delivery_id=delivery_id, reason="holdout")
