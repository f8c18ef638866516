"""End to end: the real dev server, a real worker, the API over HTTP and a real SMTP server.
Create, activate, enroll, engage — then read stats that match what happened."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import unique_domain
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template
from tests.support.journey import journey
from tools.smtp_sink import SmtpSink

SECOND = 1 / 3600  # delay_hours for one second


async def test_campaign_runs_end_to_end(system: httpx.AsyncClient, smtp: SmtpSink) -> None:
    api = system
    html = (
        "<html><body><p>Hi {{ first_name | default('there') }},</p>"
        '<a href="https://app.example.com/start">Start</a></body></html>'
    )
    template = await make_template(api, html)
    campaign = await make_campaign(
        api,
        [
            {
                "subject": "Welcome {{ first_name | default('friend') }}",
                "delay_hours": 0,
                "template_id": template,
            },
            {
                "subject": "Getting started guide",
                "delay_hours": 3 * SECOND,
                "template_id": template,
            },
            {
                "subject": "Still interested?",
                "delay_hours": 3 * SECOND,
                "template_id": template,
                "condition": {"type": "not_opened", "step_order": 2},
            },
        ],
    )
    cid, domain = campaign["id"], unique_domain()
    ana, ben, cy = (f"{name}@{domain}" for name in ("ana", "ben", "cy"))
    enrolled = await api.post(
        f"/api/campaigns/{cid}/recipients",
        json={
            "recipients": [
                {"email": ana.upper(), "fields": {"first_name": "Ana"}},
                {"email": ben},
                {"email": cy},
                {"email": "not-an-address"},
            ]
        },
    )
    assert enrolled.status_code == 200
    body = enrolled.json()
    assert (body["enrolled"], body["already_enrolled"]) == (3, 0)
    assert [r["email"] for r in body["rejected"]] == ["not-an-address"]
    again = await api.post(
        f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": ben}]}
    )
    assert again.json() == {"enrolled": 0, "already_enrolled": 1, "rejected": []}
    stats = (await api.get("/api/campaigns/stats", params={"campaign_id": cid})).json()
    assert stats["recipients"] == 3, "enrollment rows are readable at once"

    # Ana opens step 2 (so "Still interested?" is skipped); Ben clicks step 1; Cy does nothing.
    async def step_delivery(email: str, order: int) -> str | None:
        steps = (await journey(api, cid, email))["steps"]
        return next((s["delivery_id"] for s in steps if s["step_order"] == order), None)

    ben_step1 = await eventually(lambda: step_delivery(ben, 1), what="ben's first message")
    click = await api.post(
        "/api/events",
        json={
            "delivery_id": ben_step1,
            "type": "click",
            "url": "https://app.example.com/start",
            "event_id": "e-ben-1",
        },
    )
    assert click.status_code == 202
    ana_step2 = await eventually(lambda: step_delivery(ana, 2), what="ana's second message")
    for _ in range(2):  # a provider retry: the same event id counts once
        opened = await api.post(
            "/api/events", json={"delivery_id": ana_step2, "type": "open", "event_id": "e-ana-2"}
        )
        assert opened.status_code == 202
    assert opened.json()["duplicate"] is True

    async def all_done() -> bool:
        listing = (await api.get(f"/api/campaigns/{cid}/recipients")).json()
        return all(item["status"] == "completed" for item in listing["items"])

    await eventually(all_done, what="every journey to complete")
    subjects = {who: sorted(str(m["Subject"]) for m in smtp.to(who)) for who in (ana, ben, cy)}
    assert subjects[ana] == ["Getting started guide", "Welcome Ana"], (
        "ana opened step 2: step 3 skipped"
    )
    assert subjects[ben] == ["Getting started guide", "Still interested?", "Welcome friend"]
    assert subjects[cy] == ["Getting started guide", "Still interested?", "Welcome friend"]
    assert len(smtp.messages) == 8, "nothing sent twice"

    ana_journey = await journey(api, cid, ana)
    assert [(s["step_order"], s["decision"], s["condition_met"]) for s in ana_journey["steps"]] == [
        (1, "sent", None),
        (2, "sent", None),
        (3, "skipped", False),
    ]
    assert ana_journey["steps"][1]["opened"] is True and ana_journey["live"] is False

    stats = (await api.get("/api/campaigns/stats", params={"campaign_id": cid})).json()
    assert stats == {
        "campaign_id": cid,
        "recipients": 3,
        "completed": 3,
        "completion_rate": 1.0,
        "open_rate": 0.667,
        "click_rate": 0.333,
    }

    message = smtp.to(ana)[0]
    delivery_id = str(message["X-Drip-Delivery"])
    assert str(message["Message-ID"]) == f"<{delivery_id}@drip.example.com>"
    assert message.get_body(("plain",)) is not None and message.get_body(("html",)) is not None
    events = (await api.get("/api/events", params={"delivery_id": ana_step2})).json()
    assert [(e["type"], e["provider"]) for e in events] == [("open", "api")]
    assert (
        await api.post("/api/events", json={"delivery_id": "snd_unknown", "type": "open"})
    ).status_code == 404


async def test_unsubscribe_event_ends_a_waiting_journey(
    system: httpx.AsyncClient, smtp: SmtpSink
) -> None:
    api = system
    template = await make_template(api)
    campaign = await make_campaign(
        api,
        [
            {"subject": "one", "delay_hours": 0, "template_id": template},
            {"subject": "two", "delay_hours": 1, "template_id": template},
        ],
    )
    email = f"leaver@{unique_domain()}"
    await api.post(
        f"/api/campaigns/{campaign['id']}/recipients", json={"recipients": [{"email": email}]}
    )

    async def first() -> str | None:
        steps = (await journey(api, campaign["id"], email))["steps"]
        return steps[0]["delivery_id"] if steps else None

    delivery = await eventually(first, what="the first message")
    await api.post("/api/events", json={"delivery_id": delivery, "type": "unsubscribe"})

    async def ended() -> bool:
        return (await journey(api, campaign["id"], email))["status"] == "unsubscribed"

    await eventually(ended, timeout=20, what="the journey to end")
    again = await api.post(
        f"/api/campaigns/{campaign['id']}/recipients", json={"recipients": [{"email": email}]}
    )
    assert again.json()["rejected"] == [{"email": email, "reason": "suppressed: unsubscribe"}]


async def test_pause_holds_and_resume_releases_over_the_api(
    system: httpx.AsyncClient, smtp: SmtpSink
) -> None:
    api = system
    template = await make_template(api)
    campaign = await make_campaign(
        api,
        [
            {"subject": "one", "delay_hours": 0, "template_id": template},
            {"subject": "two", "delay_hours": 2 * SECOND, "template_id": template},
        ],
    )
    cid, email = campaign["id"], f"paused@{unique_domain()}"
    await api.post(f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": email}]})
    await eventually(
        lambda: asyncio.sleep(0, result=len(smtp.to(email)) == 1), what="the first message"
    )
    assert (await api.patch(f"/api/campaigns/{cid}", json={"status": "paused"})).status_code == 200
    await asyncio.sleep(5)  # step two falls due during the pause
    state = await journey(api, cid, email)
    assert len(smtp.to(email)) == 1 and state["status"] == "active"
    assert state["paused"] is True
    assert (await api.patch(f"/api/campaigns/{cid}", json={"status": "active"})).status_code == 200
    await eventually(
        lambda: asyncio.sleep(0, result=len(smtp.to(email)) == 2),
        timeout=20,
        what="the held step to go out on resume",
    )


async def test_remove_and_archive_end_journeys(system: httpx.AsyncClient) -> None:
    api = system
    template = await make_template(api)
    campaign = await make_campaign(
        api,
        [
            {"subject": "one", "delay_hours": 0, "template_id": template},
            {"subject": "two", "delay_hours": 1, "template_id": template},
        ],
    )
    cid, domain = campaign["id"], unique_domain()
    await api.post(
        f"/api/campaigns/{cid}/recipients",
        json={"recipients": [{"email": f"gone@{domain}"}, {"email": f"stay@{domain}"}]},
    )
    removed = await api.delete(f"/api/campaigns/{cid}/recipients/gone@{domain}")
    assert removed.status_code == 202 and removed.json()["status"] == "removed"
    assert (await api.get(f"/api/campaigns/{cid}/recipients/nobody@{domain}")).status_code == 404
    await api.patch(f"/api/campaigns/{cid}", json={"status": "archived"})

    async def archived() -> bool:
        return (await journey(api, cid, f"stay@{domain}"))["status"] == "archived"

    await eventually(archived, timeout=30, what="the archive to end the journey")
    assert (await journey(api, cid, f"gone@{domain}"))["status"] == "removed"
    stats = (await api.get("/api/campaigns/stats", params={"campaign_id": cid})).json()
    assert stats["completed"] == 0, "ended early is not completed"
