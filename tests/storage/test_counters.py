"""The running counters: bumped only when a transaction commits, backfilled by the migration
from rows written before they existed, and rebuilt by `rebuild()` to what the rows say."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert
from sqlmodel import Session, select

from storage import counters
from storage.counters import CAMPAIGN, Metric
from storage.db import make_engine, session_scope
from storage.migrate import downgrade, upgrade
from storage.models import (
    Campaign,
    Conversion,
    Delivery,
    Enrollment,
    Event,
    StatCounter,
    Step,
    Template,
)
from tests.storage.test_migrations import empty_database_url  # noqa: F401  (fixture)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def a_campaign_with_history(session: Session) -> tuple[int, int, int]:
    """Rows as the app writes them, without any counter: 3 recipients, 2 steps."""
    template = Template(name="t", html="<p>x</p>")
    campaign = Campaign(name="c", status="active")
    session.add_all([template, campaign])
    session.flush()
    one, two = (
        Step(campaign_id=campaign.id, step_order=n, subject="s", template_id=template.id)
        for n in (1, 2)
    )
    session.add_all([one, two])
    session.flush()
    people = [
        Enrollment(campaign_id=campaign.id, email=f"{n}@x.example", workflow_id=n, status=s,
                   opened_at=NOW if n == "a" else None, clicked_at=NOW if n == "a" else None)
        for n, s in (("a", "completed"), ("b", "completed"), ("c", "bounced"))
    ]  # fmt: skip
    session.add_all(people)
    session.flush()
    a, b, c = (e.id for e in people)
    rows = [
        ("a1", a, one, "sent", "sent"), ("b1", b, one, "sent", "sent"),
        ("c1", c, one, "sent", "bounced"), ("a2", a, two, "sent", "sent"),
        ("b2", b, two, "alternative", "sent"),
    ]  # fmt: skip
    session.add_all(
        Delivery(id=d, enrollment_id=e, campaign_id=campaign.id, step_id=s.id,
                 step_order=s.step_order, decision=decision, status=status)
        for d, e, s, decision, status in rows
    )  # fmt: skip
    session.flush()
    events = [
        ("a1", a, "open", False), ("a1", a, "open", False), ("a1", a, "click", False),
        ("b1", b, "open", True), ("a1", a, "delivered", False), ("c1", c, "bounce_hard", False),
        ("b2", b, "unsubscribe", False),
    ]  # fmt: skip
    step_of = {"a1": one, "b1": one, "c1": one, "a2": two, "b2": two}
    session.execute(
        insert(Event),
        [
            dict(provider="api", dedupe_key=f"k{n}", type=t, raw_type=t, delivery_id=d,
                 enrollment_id=e, campaign_id=campaign.id, step_id=step_of[d].id, machine=m,
                 occurred_at=NOW, received_at=NOW, signalled=True)
            for n, (d, e, t, m) in enumerate(events)
        ],
    )  # fmt: skip
    return campaign.id or 0, one.id or 0, two.id or 0


EXPECTED = {
    (CAMPAIGN, Metric.RECIPIENTS): 3,
    (CAMPAIGN, Metric.COMPLETED): 2,
    (CAMPAIGN, Metric.OPENED): 1,
    (CAMPAIGN, Metric.CLICKED): 1,
}


def expected(one: int, two: int) -> dict[tuple[int, str], int]:
    return {
        **EXPECTED,
        (one, Metric.REACHED): 3, (one, Metric.SENT): 2, (one, Metric.DELIVERED): 1,
        (one, Metric.OPENED): 1, (one, Metric.CLICKED): 1, (one, Metric.OPENED_ANY): 2,
        (one, Metric.CLICKED_ANY): 1, (one, Metric.BOUNCED): 1,
        (two, Metric.REACHED): 2, (two, Metric.SENT): 1, (two, Metric.ALTERNATIVE_SENT): 1,
        (two, Metric.UNSUBSCRIBED): 1,
    }  # fmt: skip


def test_the_migration_backfills_counters_from_existing_rows(
    empty_database_url: str,  # noqa: F811
) -> None:
    url = empty_database_url
    upgrade(url)
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            cid, one, two = a_campaign_with_history(session)
        downgrade(url, "0002_idempotency")  # as if the rows predated the counters
        upgrade(url)
        with Session(engine) as session:
            assert counters.read(session, cid) == expected(one, two)
            assert counters.from_rows(session, cid) == expected(one, two)
        with session_scope(engine) as session:  # rebuilding changes nothing when they agree
            counters.rebuild(session, cid)
        with Session(engine) as session:
            assert counters.read(session, cid) == expected(one, two)
    finally:
        engine.dispose()


def test_bumps_are_written_only_if_the_transaction_commits(engine) -> None:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        counters.bump(session, 1, 0, Metric.RECIPIENTS, 2)
        counters.bump(session, 1, 0, Metric.RECIPIENTS, 3)
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        counters.bump(session, 1, 0, Metric.RECIPIENTS, 100)
        raise RuntimeError("rolled back")
    with session_scope(engine) as session:  # a later commit does not pick up the lost bump
        counters.bump(session, 1, 0, Metric.COMPLETED)
    with Session(engine) as session:
        assert counters.read(session, 1) == {(0, "recipients"): 5, (0, "completed"): 1}
        assert session.get(StatCounter, (1, 0, "recipients")) is not None


def test_conversions_and_converted_journeys_are_counted_as_the_rows_say(engine) -> None:  # type: ignore[no-untyped-def]
    """A conversion counts for the campaign and for its last-touch step (none before the first
    message); a journey its goal ended counts as completed; erasure takes both back."""
    with session_scope(engine) as session:
        cid, one, two = a_campaign_with_history(session)
        counters.rebuild(session, cid)
    with session_scope(engine) as session:
        late = Enrollment(campaign_id=cid, email="d@x.example", workflow_id="d", status="converted")
        early = Enrollment(campaign_id=cid, email="e@x.example", workflow_id="e")
        session.add_all([late, early])
        session.flush()
        counters.bump(session, cid, CAMPAIGN, Metric.RECIPIENTS, 2)
        counters.bump(session, cid, CAMPAIGN, Metric.COMPLETED)  # finish_journey's, for `late`
        a = session.exec(select(Enrollment).where(Enrollment.email == "a@x.example")).one()
        rows = [
            Conversion(enrollment_id=a.id, campaign_id=cid, step_id=two, step_order=2,
                       event_id="evt_a", occurred_at=NOW),
            Conversion(enrollment_id=late.id, campaign_id=cid, step_id=two, step_order=2,
                       event_id="evt_d", occurred_at=NOW),
            Conversion(enrollment_id=early.id, campaign_id=cid, step_id=0, step_order=0,
                       event_id="evt_e", occurred_at=NOW),
        ]  # fmt: skip
        session.add_all(rows)
        for row in rows:
            counters.count_conversion(session, row)
    want = {
        **expected(one, two),
        (CAMPAIGN, Metric.RECIPIENTS): 5,
        (CAMPAIGN, Metric.COMPLETED): 3,  # a, b completed; d converted
        (CAMPAIGN, Metric.CONVERTED): 3,
        (two, Metric.CONVERTED): 2,  # e converted before any message: no step's
    }
    with Session(engine) as session:
        assert counters.read(session, cid) == want
        assert counters.from_rows(session, cid) == want
    with session_scope(engine) as session:
        gone = session.exec(select(Enrollment).where(Enrollment.email == "d@x.example")).one()
        counters.forget_enrollments(session, [gone])
    with Session(engine) as session:
        after = counters.read(session, cid)
    assert after[(CAMPAIGN, Metric.RECIPIENTS)] == 4
    assert after[(CAMPAIGN, Metric.COMPLETED)] == 2
    assert after[(CAMPAIGN, Metric.CONVERTED)] == 2
    assert after[(two, Metric.CONVERTED)] == 2  # the funnel keeps it, anonymously
