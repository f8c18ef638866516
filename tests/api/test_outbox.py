"""Nothing accepted is lost: enrollments and events taken while Temporal is unreachable are
answered from the database and reach their journeys once it is back (the API's outbox)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from settings import Settings
from storage.db import make_engine
from storage.models import Enrollment, Event, utcnow
from tests.conftest import free_port, run_worker, serve_api, unique_domain
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template
from tests.support.journey import journey

ROOT = Path(__file__).resolve().parents[2]


async def test_work_accepted_while_temporal_is_down_reaches_the_journeys(
    settings: Settings, dev_env: WorkflowEnvironment
) -> None:
    down = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    domain = unique_domain()
    emails = [f"a@{domain}", f"b@{domain}"]
    async with serve_api(down, None) as api:  # its lazy client can never connect
        template = await make_template(api)
        campaign = await make_campaign(
            api,
            [
                {"subject": "one", "delay_hours": 0, "template_id": template},
                {"subject": "two", "delay_hours": 1, "template_id": template},
            ],
        )
        response = await api.post(
            f"/api/campaigns/{campaign['id']}/recipients",
            json={"recipients": [{"email": e} for e in emails]},
        )
        assert response.status_code == 200 and response.json()["enrolled"] == 2
        stats = (
            await api.get("/api/campaigns/stats", params={"campaign_id": campaign["id"]})
        ).json()
        assert stats["recipients"] == 2
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        rows = session.exec(
            select(Enrollment).where(Enrollment.campaign_id == campaign["id"])
        ).all()
        assert [r.workflow_started for r in rows] == [False, False]

    async with serve_api(settings, dev_env.client) as api, run_worker(settings, dev_env.client):

        async def first_sent(email: str) -> str | None:
            steps = (await journey(api, campaign["id"], email))["steps"]
            return (
                steps[0]["delivery_id"] if steps and steps[0]["delivery_status"] == "sent" else None
            )

        delivery = await eventually(
            lambda: first_sent(emails[0]), timeout=60, what="the outbox to start the journeys"
        )
        await eventually(lambda: first_sent(emails[1]), timeout=30, what="the second journey")
        with Session(engine) as session:
            assert all(
                r.workflow_started
                for r in session.exec(
                    select(Enrollment).where(Enrollment.campaign_id == campaign["id"])
                )
            )

    # An event accepted while Temporal is down is stored, answered 202, and signalled later.
    async with serve_api(down, None) as api:
        response = await api.post(
            "/api/events", json={"delivery_id": delivery, "type": "unsubscribe"}
        )
        assert response.status_code == 202, response.text
    with Session(engine) as session:
        stored = session.exec(select(Event).where(Event.delivery_id == delivery)).one()
        assert stored.signalled is False
    async with serve_api(settings, dev_env.client) as api, run_worker(settings, dev_env.client):

        async def unsubscribed() -> bool:
            return (await journey(api, campaign["id"], emails[0]))["status"] == "unsubscribed"

        await eventually(unsubscribed, timeout=60, what="the outbox to signal the stored event")
    engine.dispose()


async def test_two_api_replicas_never_signal_the_same_event_twice(
    settings: Settings, dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Two API processes, one database: one holds the outbox lease, so every stored event is
    signalled to its journey once — not once per replica racing over the same rows."""
    down = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    domain = unique_domain()
    emails = [f"r{i}@{domain}" for i in range(60)]
    async with serve_api(down, None) as api:  # enrollments stored, journeys left to the outbox
        template = await make_template(api)
        campaign = await make_campaign(
            api, [{"subject": "later", "delay_hours": 24, "template_id": template}]
        )
        response = await api.post(
            f"/api/campaigns/{campaign['id']}/recipients",
            json={"recipients": [{"email": e} for e in emails]},
        )
        assert response.json()["enrolled"] == len(emails)
    step_id = campaign["steps"][0]["id"]
    engine = make_engine(settings.database_url)

    replicas = [_api_process(settings, dev_env, tmp_path / f"api{i}.log") for i in range(2)]
    try:

        def rows(model: type[Any], done: Any) -> tuple[int, int]:
            with Session(engine) as session:
                found = session.exec(select(model).where(model.campaign_id == campaign["id"])).all()
                return len(found), sum(1 for row in found if done(row))

        async def all_started() -> bool:
            total, started = rows(Enrollment, lambda e: e.workflow_started)
            return total == started == len(emails)

        await eventually(all_started, timeout=90, what="the replicas' outbox to start journeys")
        for replica in replicas:
            assert replica.poll() is None, "an API replica exited"

        # Both replicas are up and polling: events stored now are seen by both at once.
        past = utcnow() - timedelta(seconds=5)
        with Session(engine, expire_on_commit=False) as session:
            enrollments = session.exec(
                select(Enrollment).where(Enrollment.campaign_id == campaign["id"])
            ).all()
            for e in enrollments:
                session.add(
                    Event(
                        provider="api",
                        dedupe_key=f"open-{e.id}",
                        type="open",
                        raw_type="open",
                        enrollment_id=e.id,
                        campaign_id=e.campaign_id,
                        step_id=step_id,
                        email=e.email,
                        received_at=past,
                    )  # fmt: skip
                )
            session.commit()

        async def all_signalled() -> bool:
            total, signalled = rows(Event, lambda e: e.signalled)
            return total == signalled == len(emails)

        await eventually(all_signalled, timeout=90, what="the replicas' outbox to signal events")
        for replica in replicas:
            assert replica.poll() is None, "an API replica exited"
    finally:
        for replica in replicas:
            replica.terminate()
            replica.wait(timeout=30)
        engine.dispose()

    signals = {}
    for e in enrollments:
        history = await dev_env.client.get_workflow_handle(e.workflow_id).fetch_history()
        signals[e.email] = sum(1 for event in history.events if event.HasField(
            "workflow_execution_signaled_event_attributes"))  # fmt: skip
    assert set(signals.values()) == {1}, {k: v for k, v in signals.items() if v != 1}


def _api_process(
    settings: Settings, dev_env: WorkflowEnvironment, log: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIP_", "TEMPORAL_"))}
    env.update(
        DRIP_DATABASE_URL=settings.database_url,
        DRIP_VAR_DIR=str(settings.var_dir),
        DRIP_OUTBOX_INTERVAL_SECONDS="0.2",
        DRIP_TASK_QUEUE=settings.task_queue,
        DRIP_SEND_TASK_QUEUE=settings.send_task_queue,
        TEMPORAL_ADDRESS=dev_env.client.service_client.config.target_host,
    )
    argv = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
            "--port", str(free_port()), "--log-level", "warning"]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
