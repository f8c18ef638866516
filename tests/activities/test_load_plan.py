"""A journey's plan is read from the database once per campaign and worker: plans are frozen
once a campaign leaves draft, and a big enrollment starts thousands of journeys of one campaign."""

from __future__ import annotations

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from temporalio.exceptions import ApplicationError

from activities.bookkeeping import BookkeepingActivities
from storage.db import session_scope
from storage.models import Campaign, Step, Template


def campaign_with_steps(engine: Engine, delays: list[float]) -> int:
    with session_scope(engine) as session:
        template = Template(name="t", html="<p>hi</p>")
        campaign = Campaign(name="c", status="active")
        session.add_all([template, campaign])
        session.flush()
        for order, delay in enumerate(delays, start=1):
            session.add(
                Step(
                    campaign_id=campaign.id or 0,
                    step_order=order,
                    subject=f"s{order}",
                    delay_hours=delay,
                    template_id=template.id or 0,
                )
            )
        return campaign.id or 0


def test_a_campaign_plan_is_read_once_and_kept(engine: Engine) -> None:
    first, second = campaign_with_steps(engine, [0, 24]), campaign_with_steps(engine, [1])
    activities = BookkeepingActivities(engine)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))

    plan = activities.load_plan(first)
    assert [(s.step_order, s.delay_seconds) for s in plan.steps] == [(1, 0), (2, 24 * 3600)]
    reads = len(statements)
    assert reads > 0
    assert activities.load_plan(first) == plan
    assert len(statements) == reads  # kept: no second read
    assert [s.delay_seconds for s in activities.load_plan(second).steps] == [3600]
    assert len(statements) > reads  # another campaign is read


def test_a_campaign_without_steps_is_not_kept(engine: Engine) -> None:
    empty = campaign_with_steps(engine, [])
    activities = BookkeepingActivities(engine)
    with pytest.raises(ApplicationError, match="no steps"):
        activities.load_plan(empty)
    with session_scope(engine) as session:
        template = Template(name="t2", html="<p>hi</p>")
        session.add(template)
        session.flush()
        session.add(Step(campaign_id=empty, step_order=1, subject="s", template_id=template.id))
    assert len(activities.load_plan(empty).steps) == 1
