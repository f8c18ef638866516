"""A journey's plan is read from the database once per campaign and worker: plans are frozen
once a campaign leaves draft, and a big enrollment starts thousands of journeys of one campaign."""

from __future__ import annotations

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from temporalio.exceptions import ApplicationError

from activities.bookkeeping import BookkeepingActivities
from domain.journey import ConditionPlan, ConditionType, GoalPlan
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


def test_the_plan_carries_event_conditions_wait_until_and_the_goal(engine: Engine) -> None:
    with session_scope(engine) as session:
        template = Template(name="t", html="<p>hi</p>")
        campaign = Campaign(
            name="abandoned cart",
            status="active",
            trigger_event="cart.abandoned",
            goal_event="order.completed",
            goal_where={"paid": True},
            goal_window_hours=72,
            goal_exit=False,
        )
        session.add_all([template, campaign])
        session.flush()
        first = Step(campaign_id=campaign.id, step_order=1, subject="a", template_id=template.id)
        session.add(first)
        session.flush()
        session.add_all(
            [
                Step(
                    campaign_id=campaign.id,
                    step_order=2,
                    subject="b",
                    delay_hours=1,
                    template_id=template.id,
                    condition_type="clicked",
                    condition_step_id=first.id,
                    condition_url="https://x.example/a",
                    condition_wait_hours=1.5,
                ),
                Step(
                    campaign_id=campaign.id,
                    step_order=3,
                    subject="c",
                    template_id=template.id,
                    condition_type="not_performed",
                    condition_event="order.completed",
                    condition_where={"plan": "pro"},
                    condition_match=["cart_id"],
                    condition_wait_hours=48,
                ),
            ]
        )
        campaign_id, first_id = campaign.id or 0, first.id or 0
    plain = campaign_with_steps(engine, [0])

    plan = BookkeepingActivities(engine).load_plan(campaign_id)
    assert [s.condition for s in plan.steps] == [
        None,
        ConditionPlan(
            ConditionType.CLICKED, first_id, "https://x.example/a", wait_seconds=1.5 * 3600
        ),
        ConditionPlan(
            ConditionType.NOT_PERFORMED,
            0,
            None,
            event="order.completed",
            where={"plan": "pro"},
            match=["cart_id"],
            wait_seconds=48 * 3600,
        ),
    ]
    assert plan.goal == GoalPlan("order.completed", {"paid": True}, 72 * 3600, exit=False)
    assert plan.events_named() == {"order.completed"}
    # Nothing set: no wait, no goal.
    bare = BookkeepingActivities(engine).load_plan(plain)
    assert bare.goal is None and bare.steps[0].condition is None
