"""`DELETE /api/recipients/{email}` (GDPR erasure): the journeys end, their workflow executions
are deleted from Temporal, nothing about the person is left in the database, and an address
that had unsubscribed stays unmailable through a hashed suppression."""

from __future__ import annotations

import hashlib
import hmac
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from activities.guards import gate
from domain import search
from domain.events import IncomingEvent
from domain.journey import JourneyStatus, StepOutcome
from domain.reputation import ReputationLimits
from services.events import Events
from settings import Settings
from storage.models import Campaign, Conversion, Delivery, Enrollment, Suppression
from storage.suppression import hashed, is_suppressed, use_hash_keys
from temporal_client import LOCAL_SERVER_STARTUP
from tests.conftest import run_worker, serve_api, unique_domain
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template
from tests.support.journey import journey
from tools.smtp_sink import SmtpSink

DAY = 24


@pytest.fixture(scope="module")
async def deleting_server() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server that deletes a closed execution at once. The stock one first waits until the
    close has reached visibility (`history.transferProcessorEnsureCloseBeforeDelete`), which
    takes about 35 s on the dev server: correct, just too slow to wait for in each test."""
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=LOCAL_SERVER_STARTUP,
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        search_attributes=list(search.ALL_KEYS),
        ui=False,
        dev_server_log_level="error",
        dev_server_extra_args=[
            "--dynamic-config-value",
            "history.transferProcessorEnsureCloseBeforeDelete=false",
        ],
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def system(
    settings: Settings, deleting_server: WorkflowEnvironment, smtp: SmtpSink
) -> AsyncIterator[httpx.AsyncClient]:
    """The API and a worker on that server, sending through the SMTP sink."""
    client = deleting_server.client
    configured = settings.model_copy(
        update={
            "smtp_url": smtp.url,
            "from_email": "hello@drip.example.com",
            "temporal_address": client.service_client.config.target_host,
        }
    )
    async with serve_api(configured, client) as http, run_worker(configured, client):
        yield http


async def step_one_delivery(api: httpx.AsyncClient, campaign_id: int, email: str) -> str | None:
    steps = (await journey(api, campaign_id, email))["steps"]
    return next((s["delivery_id"] for s in steps if s["step_order"] == 1), None)


async def gone(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return True
        raise
    return False


def rows_mentioning(engine: Engine, text: str) -> list[tuple[str, Any]]:
    """Every row of every table whose any column holds `text` (case-insensitive)."""
    found = []
    with engine.connect() as conn:
        existing = set(inspect(conn).get_table_names())
        for table in SQLModel.metadata.sorted_tables:
            if table.name not in existing:
                continue
            for row in conn.execute(table.select()):
                if text.lower() in repr(tuple(row)).lower():
                    found.append((table.name, row))
    return found


async def start_journey(
    api: httpx.AsyncClient, email: str, fields: dict[str, Any]
) -> dict[str, Any]:
    """A campaign whose first step is sent at once and whose second waits a day."""
    template = await make_template(api)
    campaign = await make_campaign(
        api,
        [
            {"subject": "Welcome", "delay_hours": 0, "template_id": template},
            {"subject": "A day later", "delay_hours": DAY, "template_id": template},
        ],
    )
    enrolled = await api.post(
        f"/api/campaigns/{campaign['id']}/recipients",
        json={"recipients": [{"email": email, "fields": fields}]},
    )
    assert enrolled.json()["enrolled"] == 1
    await eventually(lambda: step_one_delivery(api, campaign["id"], email), what="the first send")
    return campaign


async def test_erasure_ends_the_journey_deletes_its_history_and_every_row(
    system: httpx.AsyncClient, engine: Engine, deleting_server: WorkflowEnvironment
) -> None:
    api, client = system, deleting_server.client
    domain = unique_domain()
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    campaign = await start_journey(api, alice, {"first_name": "Alicia", "plan": "secret-plan-42"})
    cid = campaign["id"]
    enrolled = await api.post(
        f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": bob}]}
    )
    assert enrolled.json()["enrolled"] == 1
    delivery = await step_one_delivery(api, cid, alice)
    opened = await api.post("/api/events", json={"delivery_id": delivery, "type": "open"})
    assert opened.status_code == 202
    before = await journey(api, cid, alice)
    assert before["live"] is True and before["status"] == "active"
    workflow_id = before["workflow_id"]
    # A product event that converts her journey (the campaign's goal set directly: its API is
    # the campaign definition's).
    with Session(engine) as session:
        session.execute(update(Campaign).where(col(Campaign.id) == cid).values(goal_event="paid"))
        session.commit()
    tracked = {"email": alice, "event": "paid", "properties": {"plan": "secret-plan-42"}}
    assert (await api.post("/api/track", json=tracked)).status_code == 202
    with Session(engine) as session:
        assert session.exec(select(Conversion).where(Conversion.campaign_id == cid)).all()
    assert rows_mentioning(engine, "secret-plan-42"), "the check below can see fields"

    erased = await api.delete(f"/api/recipients/{alice.upper()}")

    assert erased.status_code == 200, erased.text
    assert erased.json() == {
        "email": alice,
        "found": True,
        "journeys_ended": 1,
        "workflows_deleted": 1,
        "enrollments_deleted": 1,
        "deliveries_deleted": 1,
        "events_deleted": 1,
        "tracked_events_deleted": 1,
        "suppression": None,
    }
    with Session(engine) as session:
        assert not session.exec(select(Conversion).where(Conversion.campaign_id == cid)).all()
    # Temporal: the execution and its history are gone (deletion is asynchronous on the server).
    await eventually(lambda: gone(client, workflow_id), what="the workflow to be deleted")
    # The database: nothing names her, nor holds her fields.
    assert rows_mentioning(engine, alice) == []
    assert rows_mentioning(engine, "secret-plan-42") == []
    assert (await api.get(f"/api/campaigns/{cid}/recipients/{alice}")).status_code == 404
    assert (await api.get("/api/events", params={"email": alice})).json() == []
    # The campaign's recipients lose her; Bob's journey is untouched.
    listed = (await api.get(f"/api/campaigns/{cid}/recipients")).json()
    assert [item["email"] for item in listed["items"]] == [bob]
    assert (await journey(api, cid, bob))["live"] is True

    # Erasure is not an objection: she is not suppressed, and a repeat finds nothing.
    again = await api.delete(f"/api/recipients/{alice}")
    assert again.status_code == 200
    assert again.json()["found"] is False and again.json()["workflows_deleted"] == 0


async def test_an_unsubscribed_address_stays_suppressed_only_as_a_hash(
    system: httpx.AsyncClient, engine: Engine, deleting_server: WorkflowEnvironment
) -> None:
    api, client = system, deleting_server.client
    carol = f"carol@{unique_domain()}"
    campaign = await start_journey(api, carol, {"first_name": "Carol"})
    cid = campaign["id"]
    delivery = await step_one_delivery(api, cid, carol)
    unsubscribed = await api.post(
        "/api/events", json={"delivery_id": delivery, "type": "unsubscribe"}
    )
    assert unsubscribed.status_code == 202

    async def ended() -> bool:
        return (await journey(api, cid, carol))["status"] == "unsubscribed"

    await eventually(ended, what="the unsubscribe to end the journey")
    workflow_id = (await journey(api, cid, carol))["workflow_id"]

    erased = await api.delete(f"/api/recipients/{carol}")

    assert erased.status_code == 200, erased.text
    summary = erased.json()
    assert summary["journeys_ended"] == 0, "it had ended already"
    assert (summary["workflows_deleted"], summary["enrollments_deleted"]) == (1, 1)
    assert summary["events_deleted"] == 1
    assert summary["suppression"] == "unsubscribe"
    await eventually(lambda: gone(client, workflow_id), what="the workflow to be deleted")
    assert rows_mentioning(engine, carol) == []
    listed = (await api.get("/api/suppressions")).json()["items"]
    assert [(s["email"], s["reason"]) for s in listed] == [(hashed(carol), "unsubscribe")]

    # Never mailed again: enrolling her anywhere is refused, in any spelling.
    template = campaign["steps"][0]["template_id"]
    other = await make_campaign(api, [{"subject": "Hi", "delay_hours": 0, "template_id": template}])
    for target in (cid, other["id"]):
        retry = await api.post(
            f"/api/campaigns/{target}/recipients", json={"recipients": [{"email": carol.upper()}]}
        )
        assert retry.json() == {
            "enrolled": 0,
            "already_enrolled": 0,
            "rejected": [{"email": carol, "reason": "suppressed: unsubscribe"}],
        }


async def test_an_unknown_address_is_an_empty_summary(api: httpx.AsyncClient) -> None:
    unknown = f"nobody@{unique_domain()}"
    answer = await api.delete(f"/api/recipients/{unknown}")
    assert answer.status_code == 200
    assert answer.json() == {
        "email": unknown,
        "found": False,
        "journeys_ended": 0,
        "workflows_deleted": 0,
        "enrollments_deleted": 0,
        "deliveries_deleted": 0,
        "events_deleted": 0,
        "tracked_events_deleted": 0,
        "suppression": None,
    }


async def test_an_address_with_a_slash_is_erased_and_a_late_event_stores_no_address(
    system: httpx.AsyncClient, engine: Engine, deleting_server: WorkflowEnvironment
) -> None:
    """`/` is legal in an address (it used to route nowhere: 404). After the erasure a
    provider's complaint about the message arrives: it must suppress the address without
    writing it down again."""
    api, client = system, deleting_server.client
    erin = f"erin/sales@{unique_domain()}"
    template = await make_template(api)
    steps = [{"subject": "Welcome", "delay_hours": 0, "template_id": template}]
    campaign = await make_campaign(api, [*steps, {**steps[0], "delay_hours": DAY}])
    enrolled = await api.post(
        f"/api/campaigns/{campaign['id']}/recipients", json={"recipients": [{"email": erin}]}
    )
    assert enrolled.json()["enrolled"] == 1

    def sent() -> tuple[str, str] | None:
        with Session(engine) as session:
            row = session.exec(
                select(Delivery.id, Enrollment.workflow_id)
                .join(Enrollment, col(Enrollment.id) == Delivery.enrollment_id)
                .where(Enrollment.email == erin, Delivery.status == "sent")
            ).first()
            return (row[0], row[1]) if row else None

    async def sent_async() -> tuple[str, str] | None:
        return sent()

    delivery, workflow_id = await eventually(sent_async, what="the first send")
    view = await api.get(f"/api/campaigns/{campaign['id']}/recipients/{erin}")
    assert view.status_code == 200 and view.json()["email"] == erin, view.text

    for path in (f"/api/recipients/{erin}", f"/api/recipients/{erin.replace('/', '%2F')}"):
        erased = await api.delete(path)
        assert erased.status_code == 200, erased.text
        assert erased.json()["email"] == erin
    await eventually(lambda: gone(client, workflow_id), what="the workflow to be deleted")
    assert rows_mentioning(engine, erin) == []

    late = IncomingEvent(
        provider="mailgun",
        dedupe_key=f"late-{uuid.uuid4().hex}",
        type="complaint",
        raw_type="complained",
        delivery_id=delivery,
        recipient=erin,
        raw={"recipient": erin, "event": "complained"},
    )
    Events(engine, ReputationLimits()).store([late])
    Events(engine, ReputationLimits()).store([late])  # the provider's retry changes nothing
    assert rows_mentioning(engine, erin) == []
    with Session(engine) as session:
        assert is_suppressed(session, erin)
        [kept] = session.exec(select(Suppression)).all()
        assert kept.email == hashed(erin) and kept.reason == "complaint"
    # And so she is never enrolled again.
    again = await api.post(
        f"/api/campaigns/{campaign['id']}/recipients", json={"recipients": [{"email": erin}]}
    )
    assert again.json()["rejected"] == [{"email": erin, "reason": "suppressed: complaint"}]


def test_a_late_event_naming_only_an_erased_address_stores_no_address(engine: Engine) -> None:
    """No delivery id to go by (some events carry only the recipient): the hashed suppression
    says the address was erased."""
    frank = f"frank@{unique_domain()}"
    with Session(engine) as session:
        session.add(Suppression(email=hashed(frank), reason="unsubscribe", source="erased"))
        session.commit()
    bounce = IncomingEvent(
        provider="postmark", dedupe_key="b-1", type="bounce_hard", raw_type="HardBounce",
        recipient=frank, raw={"Email": frank},
    )  # fmt: skip
    Events(engine, ReputationLimits()).store([bounce])
    assert rows_mentioning(engine, frank) == []


def test_the_kept_hash_is_keyed_and_old_unkeyed_ones_still_match(engine: Engine) -> None:
    grace = f"grace@{unique_domain()}"
    bare = "sha256:" + hashlib.sha256(grace.encode()).hexdigest()
    assert hashed(grace).startswith("hmac-sha256:") and hashed(grace) != bare
    assert (
        hashed(grace)
        == "hmac-sha256:"
        + hmac.new(Settings().secret_key.encode(), grace.encode(), hashlib.sha256).hexdigest()
    )
    with Session(engine) as session:
        session.add(Suppression(email=bare, reason="complaint", source="erased"))
        session.commit()
        assert is_suppressed(session, grace.upper())


def test_hashes_made_with_a_rotated_out_key_still_match(engine: Engine) -> None:
    ivan = f"ivan@{unique_domain()}"
    old_key, new_key = "o" * 40, "n" * 40
    try:
        use_hash_keys([old_key])
        before = hashed(ivan)
        use_hash_keys([new_key, old_key])
        assert hashed(ivan) != before
        with Session(engine) as session:
            session.add(Suppression(email=before, reason="complaint", source="erased"))
            session.commit()
            assert is_suppressed(session, ivan)
    finally:
        use_hash_keys(Settings().suppression_keys)


async def test_erasing_again_rewrites_an_unkeyed_hash_in_the_keyed_form(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    heidi = f"heidi@{unique_domain()}"
    bare = "sha256:" + hashlib.sha256(heidi.encode()).hexdigest()
    with Session(engine) as session:
        session.add(Suppression(email=bare, reason="complaint", source="erased"))
        session.commit()
    erased = await api.delete(f"/api/recipients/{heidi}")
    assert erased.status_code == 200 and erased.json()["suppression"] == "complaint"
    with Session(engine) as session:
        assert [s.email for s in session.exec(select(Suppression))] == [hashed(heidi)]


@pytest.mark.parametrize("stored", ["plain", "hashed"])
def test_the_send_guard_sees_plain_and_hashed_suppressions(engine: Engine, stored: str) -> None:
    """The check before every step (activities/guards.py) matches an erased address's hash."""
    email = f"dave@{unique_domain()}"
    with Session(engine, expire_on_commit=False) as session:
        campaign = Campaign(name="c", status="active")
        session.add(campaign)
        session.flush()
        enrollment = Enrollment(
            campaign_id=campaign.id or 0, email=email, workflow_id=f"w-{uuid.uuid4()}"
        )
        session.add(enrollment)
        session.commit()
        assert gate(session, enrollment) is None and not is_suppressed(session, email)
        key = email if stored == "plain" else hashed(email)
        session.add(Suppression(email=key, reason="complaint"))
        session.commit()
        stop = gate(session, enrollment)
        assert stop is not None and stop.outcome == StepOutcome.ENDED
        assert stop.exit_status == JourneyStatus.COMPLAINED
        assert is_suppressed(session, email.upper())
        assert session.exec(select(Suppression)).one().email == key
