"""A rehearsal runs the real journey workflow on the time-skipping server (services/simulation.py):
delays, conditions on injected engagement, goals, send windows in the recipient's zone, and the
request's validation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from domain.journey import Decision
from services import frequency, simulation, variants
from services.errors import Invalid, Unavailable
from storage.db import session_scope
from storage.models import Campaign, Enrollment, Step, Template

DAY = 24.0


@pytest.fixture
async def simulator() -> AsyncIterator[simulation.Simulator]:
    simulator = simulation.Simulator()
    try:
        yield simulator
    finally:
        await simulator.close()


def make_campaign(engine: Engine, steps: list[dict[str, Any]], **extra: Any) -> int:
    """A campaign of these steps (ids in order); `condition_step_order` names an earlier step."""
    with session_scope(engine) as session:
        template = Template(name="t", html="<p>x</p>")
        campaign = Campaign(name="c", **extra)
        session.add_all([template, campaign])
        session.flush()
        made: list[Step] = []
        for order, spec in enumerate(steps, start=1):
            spec = dict(spec)
            on = spec.pop("condition_step_order", None)
            spec.setdefault("subject", f"Step {order}")
            step = Step(
                campaign_id=campaign.id or 0, step_order=order, template_id=template.id or 0,
                **spec,
            )  # fmt: skip
            if on is not None:
                step.condition_step_id = made[on - 1].id
            if step.alt_subject:
                step.alt_template_id = template.id
            session.add(step)
            session.flush()
            made.append(step)
        return campaign.id or 0


async def rehearse(
    engine: Engine, simulator: simulation.Simulator, campaign_id: int, **request: Any
) -> simulation.Rehearsal:
    with session_scope(engine) as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        scenario = simulation.scenario(session, campaign, **request)
    return await simulator.run(scenario)


def hours_after(start: str, entry: simulation.TimelineEntry) -> float:
    delta = datetime.fromisoformat(entry.at) - datetime.fromisoformat(start)
    return round(delta.total_seconds() / 3600, 2)


def at(when: str) -> simulation.TimelineEntry:
    """A moment as a timeline entry, to measure it with hours_after."""
    return simulation.TimelineEntry(when, 0, Decision.SENT, "", None)


async def test_a_thirty_day_campaign_follows_its_delays_and_the_injected_open(
    engine: Engine, simulator: simulation.Simulator
) -> None:
    campaign_id = make_campaign(
        engine,
        [
            {"delay_hours": 0},
            {"delay_hours": 3 * DAY},
            # Sent to those who opened step 2, else its alternative.
            {"delay_hours": 7 * DAY, "condition_type": "opened", "condition_step_order": 2,
             "alt_subject": "Did you miss it?"},
            {"delay_hours": 10 * DAY, "condition_type": "clicked", "condition_step_order": 3},
            {"delay_hours": 10 * DAY},
        ],
    )  # fmt: skip
    opened = await rehearse(
        engine,
        simulator,
        campaign_id,
        events=[{"after_hours": 80, "type": "open", "step_order": 2}],
    )
    ignored = await rehearse(engine, simulator, campaign_id)

    assert opened.status == ignored.status == "completed"
    assert [(e.step_order, e.decision, e.subject) for e in opened.timeline] == [
        (1, "sent", "Step 1"), (2, "sent", "Step 2"), (3, "sent", "Step 3"),
        (4, "skipped", "Step 4"), (5, "sent", "Step 5"),
    ]  # fmt: skip
    assert [(e.step_order, e.decision, e.subject) for e in ignored.timeline][2] == (
        3, "alternative", "Did you miss it?"
    )  # fmt: skip
    # Each step its delay after the one before: 0, 3, 10, 20 and 30 days (within a minute).
    hours = [hours_after(opened.started_at, e) for e in opened.timeline]
    assert hours == pytest.approx([0, 72, 240, 480, 720], abs=0.02)
    assert hours_after(opened.started_at, at(opened.ended_at)) == pytest.approx(720, abs=0.02)
    assert "opened(step 2) met" in (opened.timeline[2].reason or "")
    # Nothing stored: no enrollment, whatever the rehearsals did.
    with session_scope(engine) as session:
        assert session.exec(select(Enrollment)).first() is None


async def test_a_goal_ends_the_rehearsal_converted_and_a_window_holds_in_the_recipients_zone(
    engine: Engine, simulator: simulation.Simulator
) -> None:
    window = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "09:00",
              "end": "10:00", "timezone": "recipient", "fallback_timezone": "UTC"}  # fmt: skip
    campaign_id = make_campaign(
        engine,
        [
            {"delay_hours": 0, "subject": "Hello {{ first_name }}"},
            {"delay_hours": DAY},
            {"delay_hours": DAY},
        ],
        send_window=window,
        goal_event="purchased",
    )
    start = (datetime.now(UTC) + timedelta(days=2)).replace(
        hour=12, minute=0, second=0, microsecond=0
    )
    result = await rehearse(
        engine, simulator, campaign_id,
        start_at=start, fields={"timezone": "Asia/Tokyo", "first_name": "Aiko"},
        events=[{"after_hours": 30, "type": "track", "event": "purchased"}],
    )  # fmt: skip

    # 12:00 UTC is 21:00 in Tokyo: step 1 held to 09:00 Tokyo (00:00 UTC, 12 h on); the goal
    # at 30 h ends the journey before step 2 (due at 36 h).
    assert result.status == "converted"
    assert hours_after(start.isoformat(), at(result.started_at)) == 0
    assert [(e.step_order, e.decision) for e in result.timeline] == [(1, "sent")]
    assert result.timeline[0].subject == "Hello Aiko"  # rendered with the given fields
    assert hours_after(result.started_at, result.timeline[0]) == pytest.approx(12, abs=0.02)
    assert hours_after(result.started_at, at(result.ended_at)) == pytest.approx(30, abs=0.02)


@pytest.mark.parametrize(
    "request_, loc",
    [
        ({"events": [{"after_hours": -1, "type": "open", "step_order": 1}]},
         ["body", "events", 0, "after_hours"]),
        ({"events": [{"after_hours": 1, "type": "open", "step_order": 9}]},
         ["body", "events", 0, "step_order"]),
        ({"events": [{"after_hours": 1, "type": "teleport"}]}, ["body", "events", 0, "type"]),
        ({"events": [{"after_hours": 1, "type": "track"}]}, ["body", "events", 0, "event"]),
        ({"start_at": datetime(2020, 1, 1, tzinfo=UTC)}, ["body", "start_at"]),
        ({"version": 7}, ["body", "version"]),
    ],
)  # fmt: skip
def test_a_bad_request_names_its_field(
    engine: Engine, request_: dict[str, Any], loc: list[Any]
) -> None:
    campaign_id = make_campaign(engine, [{"delay_hours": 0}])
    with session_scope(engine) as session, pytest.raises(Invalid) as refused:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        simulation.scenario(session, campaign, **request_)
    assert refused.value.loc == loc


async def test_each_rehearsal_gets_the_variant_the_send_would_draw_for_its_address(
    engine: Engine, simulator: simulation.Simulator
) -> None:
    campaign_id = make_campaign(
        engine,
        [{"variants": [{"name": "A", "subject": "Subject A", "weight": 1},
                       {"name": "B", "subject": "Subject B", "weight": 1}]},
         {"delay_hours": 1}],
    )  # fmt: skip
    emails = [f"p{n}@example.com" for n in range(8)]
    given = {}
    for email in emails:
        result = await rehearse(engine, simulator, campaign_id, email=email)
        first, second = result.timeline
        assert (second.variant, second.subject) == (None, "Step 2")
        given[email] = (first.variant, first.subject)
    with session_scope(engine) as session:
        step = session.exec(select(Step).where(Step.campaign_id == campaign_id)).first()
        assert step is not None
        drawn = {e: variants.choose(session, step, e) for e in emails}
    assert given == {e: (v.name, v.subject) for e, v in drawn.items() if v is not None}
    assert {name for name, _ in given.values()} == {"A", "B"}  # both drawn among eight


async def test_a_server_that_cannot_start_is_a_503_and_the_next_call_tries_again(
    engine: Engine, tmp_path: Path
) -> None:
    campaign_id = make_campaign(engine, [{"delay_hours": 0}])
    broken = simulation.Simulator(tmp_path / "no-such-binary")
    with pytest.raises(Unavailable, match="did not start"):
        await rehearse(engine, broken, campaign_id)
    broken.test_server = simulation.TEST_SERVER
    try:
        assert (await rehearse(engine, broken, campaign_id)).status == "completed"
    finally:
        await broken.close()


@pytest.mark.parametrize("on_cap", ["defer", "skip"])
async def test_the_frequency_cap_counts_the_rehearsals_own_messages(
    engine: Engine, simulator: simulation.Simulator, on_cap: str
) -> None:
    with session_scope(engine) as session:
        frequency.set_cap(session, 2, 24)
    campaign_id = make_campaign(
        engine, [{"delay_hours": 0}, {"delay_hours": 1}, {"delay_hours": 1}], on_cap=on_cap
    )
    result = await rehearse(engine, simulator, campaign_id)
    first, second, third = result.timeline
    assert (first.decision, second.decision) == ("sent", "sent")
    if on_cap == "defer":  # held until the first message is 24 h old
        assert third.decision == "sent"
        assert hours_after(result.started_at, third) == pytest.approx(24, abs=0.02)
    else:
        assert third.decision == "skipped"
        assert "frequency_cap" in (third.reason or "")
        assert hours_after(result.started_at, third) == pytest.approx(2, abs=0.02)


async def test_a_click_during_a_wait_sends_at_once_and_an_unsubscribe_ends_the_rehearsal(
    engine: Engine, simulator: simulation.Simulator
) -> None:
    campaign_id = make_campaign(
        engine,
        [
            {"delay_hours": 0},
            # Due at 24 h, waits up to 48 h more for a click on step 1.
            {"delay_hours": DAY, "condition_type": "clicked", "condition_step_order": 1,
             "condition_wait_hours": 48},
            {"delay_hours": DAY},
        ],
    )  # fmt: skip
    result = await rehearse(
        engine, simulator, campaign_id,
        events=[{"after_hours": 30, "type": "click", "step_order": 1, "url": "https://x.test"},
                {"after_hours": 40, "type": "unsubscribe"}],
    )  # fmt: skip
    assert [(e.step_order, e.decision) for e in result.timeline] == [(1, "sent"), (2, "sent")]
    assert hours_after(result.started_at, result.timeline[1]) == pytest.approx(30, abs=0.02)
    assert result.status == "unsubscribed"
    assert hours_after(result.started_at, at(result.ended_at)) == pytest.approx(40, abs=0.02)
