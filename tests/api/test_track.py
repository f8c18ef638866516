"""`POST /api/track` and `/api/track/batch`: tracked product events stored once per event id,
checked field by field, listed newest first, enrolling through campaign triggers (active
campaigns only, never a suppressed address, never from a CSV or API enrollment), re-entry after
the cooldown only, new field values merged into running journeys, and the running journeys that
listen told at once (or by the outbox, when Temporal was down)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.testing import WorkflowEnvironment

from domain.journey import ProductEvent, RecipientInput
from settings import Settings
from storage.models import Campaign, Enrollment, Step, Suppression, TrackedEvent, utcnow
from storage.tracked_events import as_utc
from tests.api.test_bulk_enrollment import csv_upload, finished_batch
from tests.conftest import free_port, serve_api, unique_domain
from tests.support.eventually import eventually
from tests.support.factories import error_locs, make_campaign, make_template
from tests.support.journey import ended
from tests.support.mailbox import received
from tools.smtp_sink import SmtpSink


def configure(engine: Engine, campaign_id: int, **columns: Any) -> None:
    """Set a campaign's trigger/goal/re-entry columns directly (their API is another change's)."""
    if columns:
        with Session(engine) as session:
            session.execute(
                update(Campaign).where(col(Campaign.id) == campaign_id).values(**columns)
            )
            session.commit()


async def campaign(
    api: httpx.AsyncClient, engine: Engine, activate: bool = True, **columns: Any
) -> int:
    template = await make_template(api)
    steps = [{"subject": "Hi", "delay_hours": 1, "template_id": template}]
    made = await make_campaign(api, steps, activate=activate)
    configure(engine, made["id"], **columns)
    return int(made["id"])


async def track(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await api.post("/api/track", json=body)
    assert response.status_code == 202, response.text
    return response.json()


async def test_an_event_is_stored_once_and_listed_newest_first(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    email = f"maya@{unique_domain()}"
    first = await track(api, email=email, event="trial.started", event_id="e-1",
                        properties={"plan": "pro"}, occurred_at="2026-11-01T10:00:00Z")  # fmt: skip
    assert first == {
        "event_id": "e-1",
        "duplicate": False,
        "enrolled": [],
        "not_enrolled": [],
        "journeys_signalled": 0,
    }
    # A retry with the same id changes nothing, even with another body.
    again = await track(api, email=email, event="other", event_id="e-1")
    assert again["duplicate"] is True and again["enrolled"] == []
    # Without an id, one is generated; without occurred_at, it happened when received.
    generated = await track(api, email=email.upper(), event="Order Completed")
    assert generated["event_id"].startswith("evt_") and not generated["duplicate"]
    await track(api, email=email, event="older", occurred_at="2026-10-01T10:00:00Z")
    with Session(engine) as session:
        rows = session.exec(select(TrackedEvent).where(TrackedEvent.email == email)).all()
        assert sorted(r.name for r in rows) == ["Order Completed", "older", "trial.started"]
        stored = next(r for r in rows if r.event_id == "e-1")
        assert stored.properties == {"plan": "pro"} and stored.signalled  # nothing listens

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = (await api.get(f"/api/recipients/{email}/events", params=params)).json()
        seen += [e["event"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["Order Completed", "trial.started", "older"]
    listed = (await api.get(f"/api/recipients/{email}/events")).json()["items"]
    assert listed[1] == {
        "event_id": "e-1",
        "event": "trial.started",
        "properties": {"plan": "pro"},
        "occurred_at": "2026-11-01T10:00:00Z",
        "received_at": listed[1]["received_at"],
    }
    bad = await api.get(f"/api/recipients/{email}/events", params={"cursor": "nope"})
    assert bad.status_code == 422 and error_locs(bad) == [["query", "cursor"]]


async def test_an_idempotency_key_replays_the_first_answer(api: httpx.AsyncClient) -> None:
    email = f"li@{unique_domain()}"
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    for path, body in [
        ("/api/track", {"email": email, "event": "signed.up"}),
        ("/api/track/batch", {"events": [{"email": email, "event": "signed.up"}]}),
    ]:
        first = await api.post(path, json=body, headers=headers | {"Idempotency-Key": path})
        replay = await api.post(path, json=body, headers=headers | {"Idempotency-Key": path})
        assert first.status_code == replay.status_code == 202
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json() == first.json()  # the same generated id: recorded once


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "body,loc",
    [
        ({"event": "x"}, ["body", "email"]),
        ({"email": "not an address", "event": "x"}, ["body", "email"]),
        ({"email": "a@example.com"}, ["body", "event"]),
        ({"email": "a@example.com", "event": ""}, ["body", "event"]),
        ({"email": "a@example.com", "event": "x" * 129}, ["body", "event"]),
        ({"email": "a@example.com", "event": "tab\there"}, ["body", "event"]),
        ({"email": "a@example.com", "event": "x", "properties": []}, ["body", "properties"]),
        (
            {"email": "a@example.com", "event": "x", "properties": {"k": "v" * 16_400}},
            ["body", "properties"],
        ),
        (
            {"email": "a@example.com", "event": "x", "fields": {"a": {"b": 1}}},
            ["body", "fields", "a"],
        ),
        ({"email": "a@example.com", "event": "x", "fields": {"a": "x\ny"}}, ["body", "fields"]),
        ({"email": "a@example.com", "event": "x", "event_id": ""}, ["body", "event_id"]),
        ({"email": "a@example.com", "event": "x", "occurred_at": "soon"}, ["body", "occurred_at"]),
        ({"email": "a@example.com", "event": "x", "colour": "red"}, ["body", "colour"]),
    ],
)
async def test_a_wrong_field_is_a_422_naming_it(
    api: httpx.AsyncClient, body: dict[str, Any], loc: list[Any]
) -> None:
    response = await api.post("/api/track", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    locs = error_locs(response)
    assert locs and all(e[: len(loc)] == loc for e in locs), locs
    # Largest properties accepted: 16 KiB exactly.
    ok = {"email": "a@example.com", "event": "x", "properties": {"k": "v" * (16 * 1024 - 8)}}
    assert (await api.post("/api/track", json=ok)).status_code == 202


async def test_a_batch_records_each_event_on_its_own(api: httpx.AsyncClient) -> None:
    email = f"jo@{unique_domain()}"
    events = [
        {"email": email, "event": "a", "event_id": f"{email}-1"},
        {"email": email, "event": ""},  # rejected by shape
        {"email": "nobody", "event": "b"},  # rejected: not an address
        {"email": email, "event": "c", "event_id": f"{email}-1"},  # the first again
        {"email": email, "event": "d"},
    ]
    response = await api.post("/api/track/batch", json={"events": events})
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["accepted"] == 2 and answer["duplicates"] == 1
    assert [r["index"] for r in answer["rejected"]] == [1, 2]
    assert answer["rejected"][0]["reason"].startswith("event: ")
    assert answer["rejected"][1]["reason"].startswith("email: invalid email")
    retried = (await api.post("/api/track/batch", json={"events": events})).json()
    assert retried["accepted"] == 1 and retried["duplicates"] == 2  # only the id-less one again
    page = (await api.get(f"/api/recipients/{email}/events")).json()["items"]
    assert sorted(e["event"] for e in page) == ["a", "d", "d"]

    # Limits: 1 to 1,000 events.
    over = {"events": [{"email": email, "event": "x"}] * 1001}
    for body in (over, {"events": []}):
        refused = await api.post("/api/track/batch", json=body)
        assert refused.status_code == 422 and error_locs(refused) == [["body", "events"]]
    full = await api.post(
        "/api/track/batch", json={"events": [{"email": email, "event": "x"}] * 1000}
    )
    assert full.status_code == 202 and full.json()["accepted"] == 1000


async def test_a_trigger_enrolls_into_active_campaigns_only(
    api: httpx.AsyncClient, engine: Engine, dev_env: WorkflowEnvironment
) -> None:
    domain = unique_domain()
    name = f"trial.started.{domain}"
    active = await campaign(api, engine, trigger_event=name, trigger_where={"plan": "pro"})
    everyone = await campaign(api, engine, trigger_event=name)
    draft = await campaign(api, engine, activate=False, trigger_event=name)
    paused = await campaign(api, engine, trigger_event=name)
    assert (
        await api.patch(f"/api/campaigns/{paused}", json={"status": "paused"})
    ).status_code == 200

    maya = f"maya@{domain}"
    answer = await track(api, email=maya, event=name, event_id=f"{domain}-1",
                         properties={"plan": "pro"}, fields={"first_name": "Maya"})  # fmt: skip
    assert answer["enrolled"] == [active, everyone] and answer["not_enrolled"] == []
    # `where` must match; a duplicate enrolls nothing; the journey is already there.
    free = await track(api, email=f"li@{domain}", event=name, properties={"plan": "free"})
    assert free["enrolled"] == [everyone]
    again = await track(api, email=maya, event=name, event_id=f"{domain}-1")
    assert again["duplicate"] and again["enrolled"] == []
    second = await track(api, email=maya, event=name, properties={"plan": "pro"})
    assert second["enrolled"] == []
    assert [n["campaign_id"] for n in second["not_enrolled"]] == [active, everyone]
    assert all("already enrolled" in n["reason"] for n in second["not_enrolled"])
    with Session(engine) as session:
        row = session.exec(
            select(Enrollment).where(Enrollment.campaign_id == active, Enrollment.email == maya)
        ).one()
        assert row.fields == {"first_name": "Maya"} and row.trigger_event_id == f"{domain}-1"
        assert row.entry == 1 and row.workflow_started
        for other in (draft, paused):
            assert not session.exec(select(Enrollment).where(Enrollment.campaign_id == other)).all()
    # The journey starts with the event that enrolled it, its enrollment time and a summary.
    handle = dev_env.client.get_workflow_handle(row.workflow_id)
    assert await (await handle.describe()).static_summary() == f"campaign {active} → {maya}"
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [given] = await dev_env.client.data_converter.decode(started.input.payloads, [RecipientInput])
    assert given.entry == 1 and given.enrolled_at == as_utc(row.created_at).isoformat()
    assert given.trigger == ProductEvent(
        f"{domain}-1", name, given.trigger.occurred_at, {"plan": "pro"}
    )

    # A suppressed address is not enrolled, and the answer says so.
    blocked = f"blocked@{domain}"
    with Session(engine) as session:
        session.add(Suppression(email=blocked, reason="unsubscribe"))
        session.commit()
    refused = await track(api, email=blocked, event=name, properties={"plan": "pro"})
    assert refused["enrolled"] == []
    assert {n["campaign_id"]: n["reason"] for n in refused["not_enrolled"]} == {
        active: "suppressed: unsubscribe",
        everyone: "suppressed: unsubscribe",
    }

    # Enrolling through the API records no event and fires no trigger.
    target = await campaign(api, engine)
    enrolled = await api.post(
        f"/api/campaigns/{target}/recipients", json={"recipients": [{"email": f"csv@{domain}"}]}
    )
    assert enrolled.json()["enrolled"] == 1
    with Session(engine) as session:
        mine = session.exec(select(Enrollment).where(Enrollment.email == f"csv@{domain}")).all()
        assert [(e.campaign_id, e.trigger_event_id) for e in mine] == [(target, None)]
        assert not session.exec(
            select(TrackedEvent).where(TrackedEvent.email == f"csv@{domain}")
        ).all()


def end(engine: Engine, campaign_id: int, email: str, status: str, hours_ago: float) -> None:
    with Session(engine) as session:
        session.execute(
            update(Enrollment)
            .where(col(Enrollment.campaign_id) == campaign_id, col(Enrollment.email) == email)
            .values(status=status, finished_at=utcnow() - timedelta(hours=hours_ago))
        )
        session.commit()


async def test_re_entry_after_the_cooldown_only(api: httpx.AsyncClient, engine: Engine) -> None:
    domain = unique_domain()
    name = f"cart.abandoned.{domain}"
    once = await campaign(api, engine, trigger_event=name)
    again = await campaign(
        api, engine, trigger_event=name, reentry_allowed=True, reentry_cooldown_hours=24
    )
    maya = f"maya@{domain}"
    assert (await track(api, email=maya, event=name))["enrolled"] == [once, again]
    running = await track(api, email=maya, event=name)
    assert running["enrolled"] == []
    assert "entry 1 is still running" in running["not_enrolled"][1]["reason"]

    end(engine, once, maya, "completed", hours_ago=30)
    end(engine, again, maya, "completed", hours_ago=23)  # cooldown not over
    early = await track(api, email=maya, event=name)
    assert early["enrolled"] == [] and "re-entry allowed from" in early["not_enrolled"][1]["reason"]
    assert "already enrolled in this campaign" == early["not_enrolled"][0]["reason"]

    end(engine, again, maya, "completed", hours_ago=25)
    assert (await track(api, email=maya, event=name))["enrolled"] == [again]
    with Session(engine) as session:
        entries = session.exec(
            select(Enrollment)
            .where(Enrollment.campaign_id == again)
            .order_by(col(Enrollment.entry))
        ).all()
        assert [(e.entry, e.workflow_id) for e in entries] == [
            (1, f"drip-campaign-{again}-{maya}"),
            (2, f"drip-campaign-{again}-{maya}#2"),
        ]
        assert all(e.workflow_started for e in entries)
    # By API enrollment too, once the cooldown has passed.
    with Session(engine) as session:
        session.execute(
            update(Enrollment)
            .where(col(Enrollment.campaign_id) == again)
            .values(status="completed", finished_at=utcnow() - timedelta(hours=48))
        )
        session.commit()
    enrolled = await api.post(
        f"/api/campaigns/{again}/recipients", json={"recipients": [{"email": maya}]}
    )
    assert enrolled.json()["enrolled"] == 1

    # The journey view and removal address the latest entry, `?entry=n` an earlier one.
    latest = (await api.get(f"/api/campaigns/{again}/recipients/{maya}")).json()
    assert latest["workflow_id"].endswith("#3")
    first = (await api.get(f"/api/campaigns/{again}/recipients/{maya}", params={"entry": 1})).json()
    assert (
        first["workflow_id"] == f"drip-campaign-{again}-{maya}" and first["status"] == "completed"
    )
    missing = await api.get(f"/api/campaigns/{again}/recipients/{maya}", params={"entry": 9})
    assert missing.status_code == 404
    removed = await api.delete(f"/api/campaigns/{again}/recipients/{maya}")
    assert removed.status_code == 202 and removed.json()["status"] == "removed"

    # Never after an unsubscribe (nor a bounce, complaint or erasure), cooldown or not.
    bob = f"bob@{domain}"
    assert (await track(api, email=bob, event=name))["enrolled"] == [once, again]
    end(engine, again, bob, "unsubscribed", hours_ago=100)
    refused = await track(api, email=bob, event=name)
    assert "no re-entry after an unsubscribe" in refused["not_enrolled"][1]["reason"]


async def test_new_fields_reach_the_running_journeys_only(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    domain = unique_domain()
    maya = f"maya@{domain}"
    one, two, done = [await campaign(api, engine) for _ in range(3)]
    for campaign_id in (one, two, done):
        body = {"recipients": [{"email": maya, "fields": {"first_name": "Maya", "tz": "UTC"}}]}
        await api.post(f"/api/campaigns/{campaign_id}/recipients", json=body)
    end(engine, done, maya, "completed", hours_ago=1)
    response = await api.patch(
        f"/api/recipients/{maya.upper()}", json={"fields": {"tz": "Europe/Paris", "plan": "pro"}}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"email": maya, "journeys_updated": 2}
    with Session(engine) as session:
        fields = {
            e.campaign_id: e.fields
            for e in session.exec(select(Enrollment).where(Enrollment.email == maya))
        }
    expected = {"first_name": "Maya", "tz": "Europe/Paris", "plan": "pro"}
    assert fields == {one: expected, two: expected, done: {"first_name": "Maya", "tz": "UTC"}}
    for body in ({"fields": {}}, {"fields": {"a": [1]}}, {"fields": {"a": "b\x00"}}, {}):
        refused = await api.patch(f"/api/recipients/{maya}", json=body)
        assert refused.status_code == 422 and error_locs(refused)[0][:2] == ["body", "fields"]


async def signals_of(env: WorkflowEnvironment, workflow_id: str) -> list[str]:
    history = await env.client.get_workflow_handle(workflow_id).fetch_history()
    return [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in history.events
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]


async def test_listening_journeys_are_signalled_at_once_or_by_the_outbox(
    settings: Settings, dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    """Journeys here run on no worker: they exist on the server and take signals, which their
    history shows."""
    domain = unique_domain()
    maya = f"maya@{domain}"
    goal, condition = f"order.completed.{domain}", f"page.viewed.{domain}"
    async with serve_api(settings, dev_env.client) as api:
        by_goal = await campaign(api, engine, goal_event=goal, goal_window_hours=24)
        by_step = await campaign(api, engine)
        deaf = await campaign(api, engine)
        with Session(engine) as session:
            session.execute(
                update(Step)
                .where(col(Step.campaign_id) == by_step)
                .values(condition_event=condition)
            )
            session.commit()
        for campaign_id in (by_goal, by_step, deaf):
            await api.post(
                f"/api/campaigns/{campaign_id}/recipients", json={"recipients": [{"email": maya}]}
            )
        answer = await track(api, email=maya, event=goal)
        assert answer["journeys_signalled"] == 1
        assert (await track(api, email=maya, event=condition))["journeys_signalled"] == 1
        assert (await track(api, email=maya, event="unheard"))["journeys_signalled"] == 0
    assert await signals_of(dev_env, f"drip-campaign-{by_goal}-{maya}") == ["on_tracked"]
    assert await signals_of(dev_env, f"drip-campaign-{by_step}-{maya}") == ["on_tracked"]
    assert await signals_of(dev_env, f"drip-campaign-{deaf}-{maya}") == []

    # Temporal down: the event is stored and answered, and the outbox signals it later.
    down = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    async with serve_api(down, None) as api:
        answer = await track(api, email=maya, event=goal, event_id=f"{domain}-late")
        assert answer["journeys_signalled"] == 0
    with Session(engine) as session:
        assert (
            not session.exec(select(TrackedEvent).where(TrackedEvent.event_id == f"{domain}-late"))
            .one()
            .signalled
        )
    async with serve_api(settings, dev_env.client):

        async def signalled() -> bool:
            with Session(engine) as session:
                row = session.exec(
                    select(TrackedEvent).where(TrackedEvent.event_id == f"{domain}-late")
                ).one()
                return row.signalled

        await eventually(signalled, "the outbox to signal the event", timeout=30)
    assert await signals_of(dev_env, f"drip-campaign-{by_goal}-{maya}") == ["on_tracked"] * 2


async def test_a_triggered_journey_sends_with_the_event_in_its_templates(
    system: httpx.AsyncClient, smtp: SmtpSink
) -> None:
    api = system
    domain = unique_domain()
    name = f"trial.started.{domain}"
    template = await make_template(
        api, html="<p>{{ event.name }} for {{ first_name }} on {{ event.properties.plan }}</p>"
    )
    steps = [{"subject": "Your {{ event.properties.plan }} trial", "delay_hours": 0,
              "template_id": template}]  # fmt: skip
    made = await make_campaign(api, steps, trigger={"event": name, "where": {"plan": "pro"}})
    maya = f"maya@{domain}"
    answer = await track(api, email=maya, event=name, properties={"plan": "pro"},
                         fields={"first_name": "Maya"})  # fmt: skip
    assert answer["enrolled"] == [made["id"]]
    [message] = await received(smtp, maya, 1)
    raw = message.as_bytes()
    assert b"Subject: Your pro trial\n" in raw.replace(b"\r\n", b"\n")
    assert f"{name} for Maya on pro".encode() in raw


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_csv_import_fires_no_trigger(
    api: httpx.AsyncClient, worker: None, engine: Engine
) -> None:
    domain = unique_domain()
    name = f"signed.up.{domain}"
    imported, _other = [await campaign(api, engine, trigger_event=name) for _ in range(2)]
    text = f"email,first_name\nana@{domain},Ana\nben@{domain},Ben\n"
    response = await api.post(
        f"/api/campaigns/{imported}/recipients/import", files=csv_upload(text)
    )
    assert response.status_code == 202, response.text
    batch = await finished_batch(api, response.json()["batch_id"], timeout=60)
    assert batch["enrolled"] == 2
    with Session(engine) as session:
        rows = session.exec(select(Enrollment).where(col(Enrollment.email).endswith(domain)))
        # Into the campaign imported to (its trigger notwithstanding), and not the other one.
        assert sorted((e.campaign_id, e.trigger_event_id) for e in rows) == [
            (imported, None),
            (imported, None),
        ]
        assert not session.exec(
            select(TrackedEvent).where(col(TrackedEvent.email).endswith(domain))
        ).all()


async def test_a_goal_event_ends_the_journey_converted_and_counts_on_its_step(
    system: httpx.AsyncClient, smtp: SmtpSink
) -> None:
    """The real worker's journey hears the goal at once (mid-delay) and ends `converted`; the
    conversion is attributed to the step sent last, in the funnel and in the journey view."""
    api = system
    domain = unique_domain()
    goal = f"order.completed.{domain}"
    template = await make_template(api)
    steps = [
        {"subject": "Welcome", "delay_hours": 0, "template_id": template},
        {"subject": "A day later", "delay_hours": 24, "template_id": template},
    ]
    made = await make_campaign(api, steps, goal={"event": goal, "window_hours": 48})
    cid, maya = made["id"], f"maya@{domain}"
    await api.post(f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": maya}]})
    await received(smtp, maya, 1)
    answer = await track(api, email=maya, event=goal, event_id=f"{domain}-order")
    assert answer["journeys_signalled"] == 1
    view = await ended(api, cid, maya, timeout=30)
    assert view["status"] == "converted"
    assert view["conversion"]["event_id"] == f"{domain}-order"
    assert view["conversion"]["step_order"] == 1
    funnel = (await api.get(f"/api/campaigns/{cid}/funnel")).json()
    assert (funnel["converted"], funnel["conversion_rate"]) == (1, 1.0)
    assert [s["converted"] for s in funnel["steps"]] == [1, 0]
    stats = (await api.get("/api/campaigns/stats", params={"campaign_id": cid})).json()
    assert stats["completed"] == 1
    assert len(smtp.to(maya)) == 1  # no later step
