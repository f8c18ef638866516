"""Running totals for stats and the funnel, so reading them costs the same for 200 or 2,000,000
recipients.

`bump()` records an increment on the session; the increments are written just before the
session commits, in the same transaction as the rows they count (an enrollment inserted, a
delivery decided or sent, a milestone first reached), so a rolled-back or retried transaction
never counts twice. They are applied in a fixed order, last in the transaction, so concurrent
writers of the same hot counter rows (one per campaign and step) queue rather than deadlock.

`rebuild()` recomputes a campaign's counters from the rows: the backfill for data written before
the counters existed, and the check that they agree (tests, `python -m storage.counters`).
"""

from __future__ import annotations

import functools
from collections import Counter
from enum import StrEnum

from sqlalchemy import Engine, case, delete, event, func
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert
from sqlmodel import col, select

from storage.inserts import dialect_insert, insert_ignoring_conflicts
from storage.models import (
    CapHold,
    Conversion,
    Delivery,
    DeliveryMilestone,
    Enrollment,
    Event,
    StatCounter,
)

CAMPAIGN = 0  # step_id of the campaign-wide counters
_PENDING = "drip_counter_bumps"
# The journey statuses the spec's stats count as `completed`: a journey its goal ended
# (converted) fulfilled the campaign's purpose.
COMPLETED_STATUSES = frozenset({"completed", "converted"})


class Metric(StrEnum):
    # campaign-wide (step_id 0): GET /api/campaigns/stats
    RECIPIENTS = "recipients"
    COMPLETED = "completed"  # journeys ended completed or converted (COMPLETED_STATUSES)
    OPENED = "opened"  # recipients with a human open (or click)
    CLICKED = "clicked"  # recipients with a human click
    # per step: GET /api/campaigns/{id}/funnel
    REACHED = "reached"  # a decision was made: sent, alternative or skipped
    SENT = "sent"
    ALTERNATIVE_SENT = "alternative_sent"
    SKIPPED = "skipped"
    DELIVERED = "delivered"
    # OPENED / CLICKED per step: deliveries with a human open (or click) / click
    OPENED_ANY = "opened_any"  # machine opens (privacy proxies, scanners) included
    CLICKED_ANY = "clicked_any"
    BOUNCED = "bounced"
    UNCERTAIN = "uncertain"  # maybe sent: held, not resent (activities/sending.py)
    FAILED = "failed"  # refused for good by the server (size, content): not a bounce
    UNSUBSCRIBED = "unsubscribed"
    COMPLAINED = "complained"
    # held by the frequency cap (services/frequency.py), once per journey and step
    DEFERRED_BY_CAP = "deferred_by_cap"
    SKIPPED_BY_CAP = "skipped_by_cap"
    # campaign-wide and per step (the last step sent before it): Conversion rows
    CONVERTED = "converted"


STEP_METRICS = [
    Metric.REACHED,
    Metric.SENT,
    Metric.ALTERNATIVE_SENT,
    Metric.SKIPPED,
    Metric.DELIVERED,
    Metric.OPENED,
    Metric.CLICKED,
    Metric.BOUNCED,
    Metric.UNCERTAIN,
    Metric.FAILED,
    Metric.UNSUBSCRIBED,
    Metric.COMPLAINED,
    Metric.OPENED_ANY,
    Metric.CLICKED_ANY,
    Metric.CONVERTED,
]

# Event type -> the delivery milestones (and so per-step metrics) its first arrival reaches.
EVENT_MILESTONES: dict[str, tuple[Metric, ...]] = {
    "delivered": (Metric.DELIVERED,),
    "open": (Metric.OPENED, Metric.OPENED_ANY),
    "click": (Metric.OPENED, Metric.CLICKED, Metric.OPENED_ANY, Metric.CLICKED_ANY),
    "bounce_hard": (Metric.BOUNCED,),
    "unsubscribe": (Metric.UNSUBSCRIBED,),
    "complaint": (Metric.COMPLAINED,),
}
HUMAN_ONLY = {Metric.OPENED, Metric.CLICKED}
# Counted per A/B variant too (the funnel's variants, the winner's rates), as "<metric>@<name>"
# rows of the variant's step: REACHED is the journeys given the variant.
VARIANT_METRICS = (
    Metric.REACHED,
    Metric.SENT,
    Metric.DELIVERED,
    Metric.OPENED,
    Metric.CLICKED,
    Metric.CONVERTED,
)


def variant_metric(metric: Metric, variant: str) -> str:
    return f"{metric}@{variant}"


def bump(session: Session, campaign_id: int, step_id: int, metric: str, n: int = 1) -> None:
    """Count `n` more of `metric`, when (and only if) this session's transaction commits."""
    if n:
        pending: Counter[tuple[int, int, str]] = session.info.setdefault(_PENDING, Counter())
        pending[(campaign_id, step_id, str(metric))] += n


def bump_variant(
    session: Session, campaign_id: int, step_id: int, variant: str | None, metric: Metric
) -> None:
    """Count one more of `metric` for the variant a delivery was given (none: nothing)."""
    if variant is not None and metric in VARIANT_METRICS:
        bump(session, campaign_id, step_id, variant_metric(metric, variant))


def reach_milestones(session: Session, reached: list[tuple[int, int, str, Metric]]) -> None:
    """Mark milestones of deliveries, given as (campaign_id, step_id, delivery_id, milestone),
    and count each the first time only: one statement for the lot."""
    if not reached:
        return
    step_of = {(d, str(m)): (c, s) for c, s, d, m in reached}
    insert = dialect_insert(session.get_bind().dialect.name)
    table = DeliveryMilestone.__table__  # type: ignore[attr-defined]
    rows = [{"delivery_id": d, "milestone": m} for d, m in sorted(step_of)]
    for start in range(0, len(rows), 5000):  # under the bound-parameter limits
        statement = (
            insert(table)
            .values(rows[start : start + 5000])
            .on_conflict_do_nothing()
            .returning(table.c.delivery_id, table.c.milestone)
        )
        first = list(session.execute(statement))
        for delivery_id, milestone in first:
            campaign_id, step_id = step_of[(delivery_id, milestone)]
            bump(session, campaign_id, step_id, milestone)
        variants = _variants_of(session, {delivery_id for delivery_id, _ in first})
        for delivery_id, milestone in first:
            campaign_id, step_id = step_of[(delivery_id, milestone)]
            variant = variants.get(delivery_id)
            bump_variant(session, campaign_id, step_id, variant, Metric(milestone))


def _variants_of(session: Session, delivery_ids: set[str]) -> dict[str, str]:
    """{delivery id: its A/B variant} for those of these deliveries that were given one."""
    if not delivery_ids:
        return {}
    rows = session.execute(
        select(Delivery.id, Delivery.variant).where(
            col(Delivery.id).in_(sorted(delivery_ids)), col(Delivery.variant).is_not(None)
        )
    )
    return {delivery_id: variant for delivery_id, variant in rows}


def count_conversion(session: Session, conversion: Conversion, variant: str | None = None) -> None:
    """Count a Conversion row inserted in this transaction: the campaign's `converted`, and its
    last-touch step's (none when no message had been sent yet: step_id 0 is the campaign's) and
    that delivery's A/B variant's."""
    bump(session, conversion.campaign_id, CAMPAIGN, Metric.CONVERTED)
    if conversion.step_id:
        bump(session, conversion.campaign_id, conversion.step_id, Metric.CONVERTED)
        bump_variant(session, conversion.campaign_id, conversion.step_id, variant,
                     Metric.CONVERTED)  # fmt: skip


def forget_enrollments(session: Session, enrollments: list[Enrollment]) -> None:
    """Erased people leave the campaign-wide figures (recipients, completed, opened, clicked,
    converted) as if never enrolled; the funnel's per-step totals keep them, as anonymous
    numbers. Call it before their conversions are deleted."""
    ids = [e.id for e in enrollments if e.id is not None]
    converted = set(
        session.scalars(
            select(Conversion.enrollment_id).where(col(Conversion.enrollment_id).in_(ids))
        )
    )
    for e in enrollments:
        bump(session, e.campaign_id, CAMPAIGN, Metric.RECIPIENTS, -1)
        completed = e.status in COMPLETED_STATUSES
        bump(session, e.campaign_id, CAMPAIGN, Metric.COMPLETED, -completed)
        bump(session, e.campaign_id, CAMPAIGN, Metric.OPENED, -(e.opened_at is not None))
        bump(session, e.campaign_id, CAMPAIGN, Metric.CLICKED, -(e.clicked_at is not None))
        bump(session, e.campaign_id, CAMPAIGN, Metric.CONVERTED, -(e.id in converted))


def event_milestones(event_type: str | None, machine: bool) -> list[Metric]:
    reached = EVENT_MILESTONES.get(event_type or "", ())
    return [m for m in reached if not (machine and m in HUMAN_ONLY)]


@functools.cache
def _bump_statement(dialect: str) -> Insert:
    """The counter upsert, built once per dialect: built per commit, its construction and cache
    key cost more than running it (tools/send_db_bench.py)."""
    insert = dialect_insert(dialect)
    table = StatCounter.__table__  # type: ignore[attr-defined]
    statement = insert(table)
    upsert: Insert = statement.on_conflict_do_update(
        index_elements=["campaign_id", "step_id", "metric"],
        set_={"value": table.c.value + statement.excluded.value},
    )
    return upsert


@event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    pending: Counter[tuple[int, int, str]] | None = session.info.pop(_PENDING, None)
    if not pending:
        return
    session.flush()  # the rows being counted first: counter rows are the last locks taken
    rows = [
        {"campaign_id": campaign_id, "step_id": step_id, "metric": metric, "value": n}
        for (campaign_id, step_id, metric), n in sorted(pending.items())
    ]  # in key order, one statement: every writer takes counter rows' locks in the same order
    session.execute(_bump_statement(session.get_bind().dialect.name), rows)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)


def read(session: Session, campaign_id: int) -> dict[tuple[int, str], int]:
    """{(step_id, metric): value} for one campaign: a primary-key range read."""
    rows = session.execute(
        select(StatCounter.step_id, StatCounter.metric, StatCounter.value).where(
            StatCounter.campaign_id == campaign_id
        )
    )
    return {(step_id, metric): value for step_id, metric, value in rows}


def recipients_of(session: Session, campaign_ids: list[int]) -> dict[int, int]:
    """{campaign_id: recipients} for several campaigns at once, from their counters: one
    primary-key read per campaign, never counting the enrollment rows."""
    rows = session.execute(
        select(StatCounter.campaign_id, StatCounter.value).where(
            col(StatCounter.campaign_id).in_(campaign_ids),
            StatCounter.step_id == CAMPAIGN,
            StatCounter.metric == Metric.RECIPIENTS,
        )
    )
    return {campaign_id: value for campaign_id, value in rows}


def from_rows(session: Session, campaign_id: int) -> dict[tuple[int, str], int]:
    """What the counters should say, computed the slow way from the rows they count."""
    truth: Counter[tuple[int, str]] = Counter()
    recipients, completed, opened, clicked = session.execute(
        select(
            func.count(),
            func.count(case((col(Enrollment.status).in_(COMPLETED_STATUSES), 1))),
            func.count(col(Enrollment.opened_at)),
            func.count(col(Enrollment.clicked_at)),
        ).where(Enrollment.campaign_id == campaign_id)
    ).one()
    truth[(CAMPAIGN, Metric.RECIPIENTS)] = recipients
    truth[(CAMPAIGN, Metric.COMPLETED)] = completed
    truth[(CAMPAIGN, Metric.OPENED)] = opened
    truth[(CAMPAIGN, Metric.CLICKED)] = clicked
    decided = session.execute(
        select(Delivery.step_id, Delivery.decision, Delivery.status, func.count())
        .where(Delivery.campaign_id == campaign_id)
        .group_by(col(Delivery.step_id), col(Delivery.decision), col(Delivery.status))
    )
    for step_id, decision, status, n in decided:
        truth[(step_id, Metric.REACHED)] += n
        if decision == "skipped":
            truth[(step_id, Metric.SKIPPED)] += n
        elif status == "sent":
            metric = Metric.ALTERNATIVE_SENT if decision == "alternative" else Metric.SENT
            truth[(step_id, metric)] += n
        elif status in (Metric.UNCERTAIN, Metric.FAILED):
            truth[(step_id, Metric(status))] += n
    milestones = _milestones(session, campaign_id)
    for step_id, _, metric in milestones:
        truth[(step_id, metric)] += 1
    _variant_truth(session, campaign_id, milestones, truth)
    conversions = session.execute(
        select(Conversion.step_id, func.count())
        .where(Conversion.campaign_id == campaign_id)
        .group_by(col(Conversion.step_id))
    )
    for step_id, n in conversions:
        truth[(CAMPAIGN, Metric.CONVERTED)] += n
        if step_id:
            truth[(step_id, Metric.CONVERTED)] += n
    held = session.execute(
        select(CapHold.step_id, CapHold.outcome, func.count())
        .where(CapHold.campaign_id == campaign_id)
        .group_by(col(CapHold.step_id), col(CapHold.outcome))
    )
    for step_id, outcome, n in held:
        metric = Metric.SKIPPED_BY_CAP if outcome == "skipped" else Metric.DEFERRED_BY_CAP
        truth[(step_id, metric)] += n
    return {key: n for key, n in truth.items() if n}


def _variant_truth(
    session: Session,
    campaign_id: int,
    milestones: set[tuple[int, str, Metric]],
    truth: Counter[tuple[int, str]],
) -> None:
    """The per-variant counters, from the deliveries given a variant."""
    given = session.execute(
        select(Delivery.id, Delivery.step_id, Delivery.variant, Delivery.status).where(
            Delivery.campaign_id == campaign_id, col(Delivery.variant).is_not(None)
        )
    )
    variant_of: dict[str, str] = {}
    for delivery_id, step_id, variant, status in given:
        variant_of[delivery_id] = variant
        truth[(step_id, variant_metric(Metric.REACHED, variant))] += 1
        if status == "sent":
            truth[(step_id, variant_metric(Metric.SENT, variant))] += 1
    for step_id, delivery_id, metric in milestones:
        if delivery_id in variant_of and metric in VARIANT_METRICS:
            truth[(step_id, variant_metric(metric, variant_of[delivery_id]))] += 1
    converted = session.execute(
        select(Conversion.step_id, Delivery.variant)
        .join(
            Delivery,
            (col(Delivery.enrollment_id) == col(Conversion.enrollment_id))
            & (col(Delivery.step_id) == col(Conversion.step_id)),
        )
        .where(Conversion.campaign_id == campaign_id, col(Delivery.variant).is_not(None))
    )
    for step_id, variant in converted:
        truth[(step_id, variant_metric(Metric.CONVERTED, variant))] += 1


def rebuild(session: Session, campaign_id: int) -> None:
    """Replace a campaign's counters and milestones with what its rows say (the caller commits;
    run it while the campaign is quiet, or counts made meanwhile may be lost)."""
    truth = from_rows(session, campaign_id)
    session.execute(delete(StatCounter).where(col(StatCounter.campaign_id) == campaign_id))
    session.add_all(
        StatCounter(campaign_id=campaign_id, step_id=step_id, metric=metric, value=n)
        for (step_id, metric), n in sorted(truth.items())
    )
    delivery_ids = select(Delivery.id).where(Delivery.campaign_id == campaign_id)
    session.execute(
        delete(DeliveryMilestone).where(col(DeliveryMilestone.delivery_id).in_(delivery_ids))
    )
    rows = {(d, str(m)) for _, d, m in _milestones(session, campaign_id)}
    insert_ignoring_conflicts(
        session,
        DeliveryMilestone,
        [{"delivery_id": d, "milestone": m} for d, m in sorted(rows)],
        "milestone",
    )


def _milestones(session: Session, campaign_id: int) -> set[tuple[int, str, Metric]]:
    """(step_id, delivery_id, milestone) reached, from the events and the SMTP bounces."""
    reached: set[tuple[int, str, Metric]] = set()
    events = session.execute(
        select(Event.step_id, Event.delivery_id, Event.type, Event.machine).where(
            Event.campaign_id == campaign_id,
            col(Event.delivery_id).is_not(None),
            col(Event.step_id).is_not(None),
        )
    )
    for step_id, delivery_id, event_type, machine in events:
        for metric in event_milestones(event_type, machine):
            reached.add((step_id, delivery_id, metric))
    bounced = session.execute(
        select(Delivery.step_id, Delivery.id).where(
            Delivery.campaign_id == campaign_id, Delivery.status == "bounced"
        )
    )
    for step_id, delivery_id in bounced:
        reached.add((step_id, delivery_id, Metric.BOUNCED))
    return reached


def main() -> None:
    """`python -m storage.counters [campaign_id ...]`: rebuild (all campaigns by default)."""
    import sys

    from settings import get_settings
    from storage.db import make_engine, session_scope
    from storage.models import Campaign

    engine: Engine = make_engine(get_settings().database_url)
    with session_scope(engine) as session:
        ids = [int(a) for a in sys.argv[1:]] or [c.id or 0 for c in session.exec(select(Campaign))]
    for campaign_id in ids:
        with session_scope(engine) as session:
            rebuild(session, campaign_id)
        print(f"campaign {campaign_id}: counters rebuilt")  # noqa: T201 (the command's output)


if __name__ == "__main__":
    main()
