"""Nothing accepted is lost: enrollments and events taken while Temporal is unreachable are
answered from the database and reach their journeys once it is back (the API's outbox)."""

from __future__ import annotations

from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from settings import Settings
from storage.db import make_engine
from storage.models import Enrollment, Event
from tests.api.helpers import eventually, journey, make_campaign, make_template
from tests.conftest import free_port, run_worker, serve_api, unique_domain


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
