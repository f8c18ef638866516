"""The journey view and the "who is where" list, over rows as the journeys and the tracking
endpoint write them: each decided step's reason and evidence (from the workflow while it runs,
rebuilt from the database once it has finished, and said so), `waiting_for`, the conversion,
re-entries (`?entry=`), and `?current_step=&status=`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import Session

from domain.journey import (
    Decision,
    Evidence,
    JourneyState,
    JourneyVersion,
    StepProgress,
    WaitingFor,
    WaitingKind,
)
from services import journey_view
from storage.db import session_scope
from storage.models import (
    Campaign,
    Conversion,
    Delivery,
    Enrollment,
    Event,
    Step,
    Template,
    TrackedEvent,
)
from tests.support.factories import make_campaign, make_template

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def iso(minutes: float) -> str:
    return at(minutes).strftime("%Y-%m-%dT%H:%M:%SZ")


async def three_steps(api: httpx.AsyncClient, engine: Engine) -> tuple[int, list[int]]:
    """Step 1 unconditional; step 2 `not_opened(step 1)` with an alternative; step 3
    `performed(order.completed, where plan=pro, match cart_id)` waiting up to 48 h (its columns
    written directly, as the definitions API will)."""
    template = await make_template(api)
    campaign = await make_campaign(
        api,
        [
            {"subject": "One", "delay_hours": 0, "template_id": template},
            {"subject": "Two", "delay_hours": 1, "template_id": template,
             "condition": {"type": "not_opened", "step_order": 1},
             "alternative": {"subject": "Two again", "template_id": template}},
            {"subject": "Three", "delay_hours": 1, "template_id": template},
        ],
        activate=False,
    )  # fmt: skip
    ids = [s["id"] for s in campaign["steps"]]
    with session_scope(engine) as session:
        three = session.get(Step, ids[2])
        assert three is not None
        three.condition_type = "performed"
        three.condition_event = "order.completed"
        three.condition_where = {"plan": "pro"}
        three.condition_match = ["cart_id"]
        three.condition_wait_hours = 48
        session.add(three)
    return campaign["id"], ids


def enroll_row(session: Session, cid: int, email: str, **values: Any) -> Enrollment:
    row = Enrollment(
        campaign_id=cid,
        email=email,
        workflow_id=f"test-view-{uuid.uuid4()}",  # no such workflow: nothing live to ask
        created_at=T0,
        **values,
    )
    session.add(row)
    session.flush()
    return row


def deliver(session: Session, e: Enrollment, step_id: int, order: int, **values: Any) -> str:
    delivery_id = f"snd_{uuid.uuid4().hex[:12]}"
    session.add(
        Delivery(id=delivery_id, enrollment_id=e.id or 0, campaign_id=e.campaign_id,
                 step_id=step_id, step_order=order, **values)
    )  # fmt: skip
    return delivery_id


def open_event(session: Session, e: Enrollment, delivery: str, step: int, minutes: float,
               machine: bool = False) -> None:  # fmt: skip
    session.add(
        Event(provider="api", dedupe_key=str(uuid.uuid4()), type="open", raw_type="open",
              delivery_id=delivery, enrollment_id=e.id, campaign_id=e.campaign_id, step_id=step,
              email=e.email, machine=machine, occurred_at=at(minutes), signalled=True)
    )  # fmt: skip


def tracked(session: Session, email: str, name: str, minutes: float, **properties: Any) -> str:
    event_id = f"evt_{uuid.uuid4().hex[:8]}"
    session.add(
        TrackedEvent(event_id=event_id, email=email, name=name, properties=properties,
                     occurred_at=at(minutes), signalled=True)
    )  # fmt: skip
    return event_id


async def test_a_finished_journey_says_why_from_the_database(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    cid, (one, two, three) = await three_steps(api, engine)
    email = f"ana@{uuid.uuid4().hex[:6]}.example"
    with session_scope(engine) as session:
        cart = tracked(session, email, "cart.abandoned", 0, cart_id="c1")
        ana = enroll_row(session, cid, email, status="converted", current_step=3,
                         finished_at=at(200), trigger_event_id=cart)  # fmt: skip
        first = deliver(session, ana, one, 1, decision="sent", status="sent", decided_at=at(1))
        open_event(session, ana, first, one, 5, machine=True)  # a proxy: not a person
        open_event(session, ana, first, one, 30)
        deliver(session, ana, two, 2, decision="alternative", condition_met=False,
                status="sent", decided_at=at(61))  # fmt: skip
        deliver(session, ana, three, 3, decision="sent", condition_met=True, status="sent",
                decided_at=at(150))  # fmt: skip
        tracked(session, email, "order.completed", -10, plan="pro", cart_id="c1")  # before entry
        tracked(session, email, "order.completed", 100, plan="basic", cart_id="c1")  # not pro
        tracked(session, email, "order.completed", 110, plan="pro", cart_id="c2")  # another cart
        order = tracked(session, email, "order.completed", 120, plan="pro", cart_id="c1")
        tracked(session, email, "order.completed", 160, plan="pro", cart_id="c1")  # after
        session.add(Conversion(enrollment_id=ana.id or 0, campaign_id=cid, step_id=three,
                               step_order=3, event_id=order, occurred_at=at(120)))  # fmt: skip
    response = await api.get(f"/api/campaigns/{cid}/recipients/{email}")
    assert response.status_code == 200, response.text
    view = response.json()
    assert (view["status"], view["live"], view["entry"], view["waiting_for"]) == (
        "converted",
        False,
        1,
        None,
    )
    assert view["version"] is None  # Temporal has no such journey
    assert view["conversion"] == {
        "event_id": order, "step_id": three, "step_order": 3, "occurred_at": iso(120),
    }  # fmt: skip
    note = " (from the database: the journey has finished)"
    s1, s2, s3 = view["steps"]
    assert (s1["decision"], s1["reason"], s1["evidence"]) == (
        "sent",
        "sent: no condition" + note,
        [],
    )
    open_key = s2["evidence"][0]["event_id"]
    assert s2["reason"] == (
        f"alternative sent: not_opened(step 1) failed — human open at {iso(30)} ({open_key})" + note
    )
    assert [(e["type"], e["at"], e["step_id"]) for e in s2["evidence"]] == [("open", iso(30), one)]
    assert s3["reason"] == (
        "sent: performed(order.completed, where plan=pro, match cart_id) met — "
        f"order.completed at {iso(120)} ({order})" + note
    )
    assert [e["event_id"] for e in s3["evidence"]] == [order]


async def test_conditions_not_settled_say_so_with_their_wait(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    cid, (one, two, three) = await three_steps(api, engine)
    email = f"ben@{uuid.uuid4().hex[:6]}.example"
    with session_scope(engine) as session:
        ben = enroll_row(session, cid, email, status="completed", current_step=3,
                         finished_at=at(300))  # fmt: skip
        deliver(session, ben, one, 1, decision="sent", status="sent", decided_at=at(1))
        deliver(session, ben, two, 2, decision="sent", condition_met=True, status="sent",
                decided_at=at(61))  # fmt: skip
        deliver(session, ben, three, 3, decision="skipped", condition_met=False,
                status="skipped", decided_at=at(200))  # fmt: skip
    view = (await api.get(f"/api/campaigns/{cid}/recipients/{email}")).json()
    reasons = [s["reason"].removesuffix(" (from the database: the journey has finished)")
               for s in view["steps"]]  # fmt: skip
    assert reasons == [
        "sent: no condition",
        "sent: not_opened(step 1) met — no human open",
        "skipped: performed(order.completed, where plan=pro, match cart_id) not met within 48 h",
    ]
    assert view["conversion"] is None
    with session_scope(engine) as session:  # its open no longer stored (erased): no evidence
        cy = enroll_row(session, cid, f"cy.{email}", status="completed", finished_at=at(300))
        deliver(session, cy, two, 2, decision="alternative", condition_met=False, status="sent",
                decided_at=at(61))  # fmt: skip
    [step] = (await api.get(f"/api/campaigns/{cid}/recipients/cy.{email}")).json()["steps"]
    assert step["reason"].startswith("alternative sent: not_opened(step 1) failed (from the")
    assert step["evidence"] == []


async def test_entries_the_latest_by_default_an_earlier_one_by_number(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    cid, _ = await three_steps(api, engine)
    email = f"cy@{uuid.uuid4().hex[:6]}.example"
    with session_scope(engine) as session:
        enroll_row(session, cid, email, entry=1, status="completed", finished_at=at(10))
        enroll_row(session, cid, email, entry=2, status="removed", finished_at=at(20))
    base = f"/api/campaigns/{cid}/recipients/{email}"
    assert (await api.get(base)).json()["entry"] == 2
    earlier = (await api.get(base, params={"entry": 1})).json()
    assert (earlier["entry"], earlier["status"]) == (1, "completed")
    missing = await api.get(base, params={"entry": 3})
    assert missing.status_code == 404 and "entry 3" in missing.json()["detail"]
    assert (await api.get(base, params={"entry": 0})).status_code == 422
    listed = (await api.get(f"/api/campaigns/{cid}/recipients")).json()["items"]
    assert [(i["entry"], i["status"]) for i in listed] == [(1, "completed"), (2, "removed")]


async def test_who_is_where_lists_only_the_journeys_at_that_step(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    cid, _ = await three_steps(api, engine)
    with session_scope(engine) as session:
        for name, step, status in [("a", 2, "active"), ("b", 1, "active"), ("c", 2, "active"),
                                   ("d", 2, "unsubscribed"), ("e", 3, "converted")]:  # fmt: skip
            enroll_row(session, cid, f"{name}@where.example", current_step=step, status=status)
    url = f"/api/campaigns/{cid}/recipients"

    async def emails(**params: Any) -> list[str]:
        response = await api.get(url, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["total"] == len(page["items"])
        return [i["email"].split("@")[0] for i in page["items"]]

    assert await emails(current_step=2, status="active") == ["a", "c"]
    assert await emails(current_step=2) == ["a", "c", "d"]
    assert await emails(status="converted") == ["e"]
    assert await emails(current_step=0) == []
    assert (await api.get(url, params={"current_step": -1})).status_code == 422
    assert (await api.get(url, params={"status": "finished"})).status_code == 422


def test_a_running_journey_gives_its_own_reasons_and_waiting_for(engine: Engine) -> None:
    """The workflow's words win while it runs; steps it has no reason for (a journey started on
    older code) are explained from the database, and said so."""
    with session_scope(engine) as session:
        template = Template(name="t", html="x")
        campaign = Campaign(name="c", status="active")
        session.add_all([template, campaign])
        session.flush()
        steps = [Step(campaign_id=campaign.id or 0, step_order=n, subject="s",
                      template_id=template.id or 0) for n in (1, 2)]  # fmt: skip
        session.add_all(steps)
        session.flush()
        dee = enroll_row(session, campaign.id or 0, "dee@x.example", current_step=2)
        for n, step in enumerate(steps, 1):
            deliver(session, dee, step.id or 0, n, decision="sent", status="sent",
                    decided_at=at(n))  # fmt: skip
        ids = [s.id or 0 for s in steps]
    waiting = WaitingFor(WaitingKind.WAIT_UNTIL, "step 3 waits up to 48 h for opened(step 2)",
                         iso(3000), step_order=3, condition="opened(step 2)")  # fmt: skip
    live = JourneyState(
        status="active", current_step=2, next_step_due_at=None, paused=False,
        steps=[
            StepProgress(ids[0], 1, Decision.SENT, None, iso(1), reason="sent: no condition",
                         evidence=[Evidence("e1", "open", iso(0), ids[0])]),
            StepProgress(ids[1], 2, Decision.SENT, None, iso(2)),  # no reason recorded
        ],
        waiting_for=waiting, version=JourneyVersion.JOURNEYS,
    )  # fmt: skip
    with Session(engine) as session:
        enrollment = session.get(Enrollment, dee.id)
        assert enrollment is not None
        views, conversion = journey_view._from_rows(session, enrollment, live)
    assert [(v.reason, v.evidence) for v in views] == [
        ("sent: no condition", [Evidence("e1", "open", iso(0), ids[0])]),
        ("sent: no condition (from the database: this journey's version records no reasons)", []),
    ]
    assert conversion is None
    assert journey_view.waiting_for(live) == waiting
    live.waiting_for = None  # JOURNEYS on, nothing pending means nothing pending
    assert journey_view.waiting_for(live) is None


def test_older_journeys_wait_for_what_their_state_implies() -> None:
    old = JourneyState(status="active", current_step=1, next_step_due_at=iso(60), paused=False)
    assert journey_view.waiting_for(old) == WaitingFor(
        WaitingKind.DELAY, f"step 2 is due at {iso(60)}", iso(60), step_order=2
    )
    old.paused = True
    assert journey_view.waiting_for(old) == WaitingFor(
        WaitingKind.PAUSED, "held: the campaign is paused", None
    )
    old.status = "completed"
    assert journey_view.waiting_for(old) is None
