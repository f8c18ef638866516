"""Goal conversions, recorded as a tracked event is stored: once per journey, running or
finished, within the goal's window of the last message sent before the event (or of the
enrollment), attributed to that step (last touch), never for an event before the enrollment,
and counted per step and per campaign in the same transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from services import tracking
from storage import counters
from storage.counters import CAMPAIGN, Metric
from storage.models import Campaign, Conversion, Delivery, Enrollment, Step, Template

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
GOAL = "order.completed"


def journeys(engine: Engine, **goal: Any) -> tuple[int, list[int], dict[str, int]]:
    """A campaign with a goal, two steps, and journeys: `sent` (step 1 at T0+1h, step 2 at
    T0+24h), `none` (nothing sent yet), `done` (finished after step 1); all enrolled at T0."""
    with Session(engine) as session:
        template = Template(name="t", html="<p>x</p>")
        campaign = Campaign(name="c", status="active", goal_event=GOAL, **goal)
        session.add_all([template, campaign])
        session.flush()
        steps = [
            Step(
                campaign_id=campaign.id or 0,
                step_order=n,
                subject="s",
                template_id=template.id or 0,
            )
            for n in (1, 2)
        ]
        session.add_all(steps)
        session.flush()
        people: dict[str, int] = {}
        for name, status in (("sent", "active"), ("none", "active"), ("done", "completed")):
            e = Enrollment(campaign_id=campaign.id or 0, email=f"{name}@x.example",
                           workflow_id=name, status=status, created_at=T0)  # fmt: skip
            session.add(e)
            session.flush()
            people[name] = e.id or 0
        sends = [("sent", 0, 1), ("sent", 1, 24), ("done", 0, 1)]
        for name, step, hours in sends:
            session.add(
                Delivery(
                    id=f"{name}{step}",
                    enrollment_id=people[name],
                    campaign_id=campaign.id or 0,
                    step_id=steps[step].id or 0,
                    step_order=step + 1,
                    decision="sent",
                    status="sent",
                    sent_at=T0 + timedelta(hours=hours),
                )  # fmt: skip
            )
        session.commit()
        return campaign.id or 0, [s.id or 0 for s in steps], people


def track(engine: Engine, email: str, hours: float, event_id: str, **properties: Any) -> None:
    request = tracking.TrackRequest(
        email=email, event=GOAL, properties=properties, event_id=event_id,
        occurred_at=T0 + timedelta(hours=hours),
    )  # fmt: skip
    tracking.store(engine, [request])


def conversions(engine: Engine) -> dict[int, tuple[int, str]]:
    with Session(engine) as session:
        return {c.enrollment_id: (c.step_id, c.event_id) for c in session.exec(select(Conversion))}


def test_a_conversion_is_attributed_to_the_last_step_sent_and_counted_once(
    engine: Engine,
) -> None:
    campaign, (one, two), people = journeys(engine, goal_window_hours=48)
    track(engine, "sent@x.example", 12, "before-step-2")  # after step 1, before step 2
    track(engine, "sent@x.example", 30, "again")  # once per journey
    track(engine, "none@x.example", 47, "none")  # nothing sent: within 48 h of the enrollment
    track(engine, "done@x.example", 40, "done")  # a finished journey still converts
    track(engine, "done@x.example", 41, "done")  # a retried event id changes nothing
    assert conversions(engine) == {
        people["sent"]: (one, "before-step-2"),
        people["none"]: (0, "none"),
        people["done"]: (one, "done"),
    }
    with Session(engine) as session:
        counted = counters.read(session, campaign)
        assert counted[(CAMPAIGN, Metric.CONVERTED)] == 3
        assert counted[(one, Metric.CONVERTED)] == 2
        assert (two, Metric.CONVERTED) not in counted
        truth = counters.from_rows(session, campaign)
        assert {k: v for k, v in counted.items() if k[1] == Metric.CONVERTED} == {
            k: v for k, v in truth.items() if k[1] == Metric.CONVERTED
        }


def test_outside_the_window_before_enrollment_or_another_goal_is_no_conversion(
    engine: Engine,
) -> None:
    campaign, (one, two), people = journeys(
        engine, goal_window_hours=10, goal_where={"plan": "pro"}
    )
    track(engine, "sent@x.example", -1, "early", plan="pro")  # before the enrollment
    track(engine, "sent@x.example", 12, "late", plan="pro")  # 11 h after step 1
    track(engine, "sent@x.example", 25, "other-plan", plan="free")  # `where` does not match
    track(engine, "none@x.example", 10.5, "none", plan="pro")  # 10.5 h after the enrollment
    track(engine, "done@x.example", 11, "done")  # no plan at all
    assert conversions(engine) == {}
    # Within the window of the last message sent before it: step 2, at T0+24h.
    track(engine, "sent@x.example", 33, "in-window", plan="pro")
    assert conversions(engine) == {people["sent"]: (two, "in-window")}
    with Session(engine) as session:
        counted = counters.read(session, campaign)
        assert counted[(CAMPAIGN, Metric.CONVERTED)] == 1 and counted[(two, Metric.CONVERTED)] == 1
        assert (one, Metric.CONVERTED) not in counted


def test_without_a_window_any_later_goal_converts(engine: Engine) -> None:
    _, (one, two), people = journeys(engine)
    track(engine, "sent@x.example", 24 * 365, "a-year-later")
    assert conversions(engine) == {people["sent"]: (two, "a-year-later")}
