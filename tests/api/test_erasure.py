"""`DELETE /api/recipients/{email}` (GDPR erasure): the journeys end, their workflow executions
are deleted from Temporal, nothing about the person is left in the database, and an address
that had unsubscribed stays unmailable through a hashed suppression."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from activities.guards import gate
from domain import search
from domain.journey import JourneyStatus, StepOutcome
from settings import Settings
from storage.models import Campaign, Enrollment, Suppression
from storage.suppression import hashed, is_suppressed
from tests.api.helpers import eventually, journey, make_campaign, make_template
from tests.conftest import run_worker, serve_api, unique_domain
from tests.smtp import SmtpSink

DAY = 24


@pytest.fixture(scope="module")
async def deleting_server() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server that deletes a closed execution at once. The stock one first waits until the
    close has reached visibility (`history.transferProcessorEnsureCloseBeforeDelete`), which
    takes about 35 s on the dev server: correct, just too slow to wait for in each test."""
    env = await WorkflowEnvironment.start_local(
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
        "suppression": None,
    }
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
        "suppression": None,
    }


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
