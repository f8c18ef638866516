"""Journeys that react to the product, end to end on the real dev server with the real worker,
the API and an SMTP server (asserted on the bytes it received): a tracked event enrolls through a
trigger and the first message arrives; a click (or a tracked event) during a wait-until sends
the next step within a second of being accepted; a goal event ends the journey `converted` and
the funnel and stats show it. Once, on SQLite: the database side is covered on both elsewhere."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from domain.journey import CURRENT_JOURNEY_VERSION
from tests.conftest import unique_domain
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template
from tests.support.journey import journey
from tools.smtp_sink import Received, SmtpSink

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

LINK = "https://app.example.com/upgrade"
HTML = f'<p>Hi {{{{ first_name | default("there") }}}}</p><a href="{LINK}">Upgrade</a>'
DELIVERY = re.compile(rb"^X-Drip-Delivery: (\S+)\r$", re.MULTILINE)


async def messages(smtp: SmtpSink, email: str, n: int, timeout: float = 60) -> list[Received]:
    async def arrived() -> list[Received] | None:
        got = smtp.raw_to(email)
        return got if len(got) >= n else None

    return await eventually(arrived, f"{n} message(s) to {email}", timeout)


def subject(message: Received) -> bytes:
    [line] = [
        h
        for h in message.content.split(b"\r\n\r\n")[0].split(b"\r\n")
        if h.startswith(b"Subject: ")
    ]
    return line.removeprefix(b"Subject: ")


async def track(api: httpx.AsyncClient, **event: Any) -> tuple[dict[str, Any], float]:
    """POST /api/track; the answer and the moment it was accepted (time.time(), as the sink)."""
    response = await api.post("/api/track", json=event)
    accepted = time.time()
    assert response.status_code == 202, response.text
    return response.json(), accepted


async def waiting(api: httpx.AsyncClient, cid: int, email: str, kind: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        view = await journey(api, cid, email)
        return view if (view["waiting_for"] or {}).get("kind") == kind else None

    return await eventually(check, f"{email} to wait ({kind})", 30)


async def test_a_tracked_event_enrolls_through_a_trigger_and_the_first_message_arrives(
    system: httpx.AsyncClient, smtp: SmtpSink
) -> None:
    api = system
    template = await make_template(api, HTML)
    campaign = await make_campaign(
        api,
        [{"subject": "Your {{ event.properties.plan }} trial, {{ first_name }}", "delay_hours": 0,
          "template_id": template}],
        trigger={"event": "trial.started"},
    )  # fmt: skip
    other = await make_campaign(  # a trigger of another name: not enrolled
        api,
        [{"subject": "x", "delay_hours": 0, "template_id": template}],
        trigger={"event": "trial.ended"},
    )
    cid, email = campaign["id"], f"ana@{unique_domain()}"
    body, _ = await track(api, email=email, event="trial.started", event_id=f"evt-{email}",
                          properties={"plan": "pro"}, fields={"first_name": "Ana"})  # fmt: skip
    assert (body["duplicate"], body["enrolled"]) == (False, [cid])
    [first] = await messages(smtp, email, 1)
    assert first.rcpt_tos == (email,)
    # The event that enrolled them is in the template, and its fields are theirs.
    assert subject(first) == b"Your pro trial, Ana"
    again, _ = await track(api, email=email, event="trial.started", event_id=f"evt-{email}")
    assert (again["duplicate"], again["enrolled"]) == (True, [])
    view = await eventually(lambda: _finished(api, cid, email), f"{email}'s journey", 30)
    # Finished (one step): its version read from its history, its reason rebuilt.
    assert (view["entry"], view["fields"]["first_name"]) == (1, "Ana")
    assert view["version"] == CURRENT_JOURNEY_VERSION
    assert view["steps"][0]["reason"] == (
        "sent: no condition (from the database: the journey has finished)"
    )
    listed = (await api.get(f"/api/campaigns/{other['id']}/recipients")).json()
    assert listed["total"] == 0
    assert len(smtp.raw_to(email)) == 1  # the retry sent nothing


async def test_a_click_during_a_wait_until_sends_the_next_step_at_once(
    system: httpx.AsyncClient, smtp: SmtpSink
) -> None:
    api = system
    template = await make_template(api, HTML)
    campaign = await make_campaign(api, [
        {"subject": "Welcome", "delay_hours": 0, "template_id": template},
        {"subject": "Since you clicked", "delay_hours": 0, "template_id": template,
         "condition": {"type": "clicked", "step_order": 1, "wait_hours": 24}},
    ])  # fmt: skip
    cid, email = campaign["id"], f"ben@{unique_domain()}"
    enrolled = await api.post(
        f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": email}]}
    )
    assert enrolled.json()["enrolled"] == 1
    [welcome] = await messages(smtp, email, 1)
    view = await waiting(api, cid, email, "wait_until")
    assert view["waiting_for"]["condition"] == "clicked(step 1)"
    assert view["current_step"] == 1
    who = (await api.get(f"/api/campaigns/{cid}/recipients",
                         params={"current_step": 1, "status": "active"})).json()  # fmt: skip
    assert [i["email"] for i in who["items"]] == [email]
    match = DELIVERY.search(welcome.content)
    assert match is not None
    response = await api.post(
        "/api/events",
        json={"delivery_id": match.group(1).decode(), "type": "click", "url": LINK,
              "event_id": f"click-{email}"},
    )  # fmt: skip
    accepted = time.time()
    assert response.status_code == 202, response.text
    _, second = await messages(smtp, email, 2, timeout=10)
    assert subject(second) == b"Since you clicked"
    print(f"click accepted -> next step received: {(second.at - accepted) * 1000:.0f} ms")  # noqa: T201
    assert second.at - accepted < 1.0
    done = await eventually(
        lambda: _finished(api, cid, email), f"{email}'s journey to complete", 30
    )
    assert done["status"] == "completed" and done["waiting_for"] is None
    assert done["steps"][1]["reason"].startswith("sent: clicked(step 1) met — human click on ")


async def test_a_tracked_event_during_a_wait_until_sends_the_step_at_once(
    system: httpx.AsyncClient, smtp: SmtpSink
) -> None:
    api = system
    template = await make_template(api, HTML)
    campaign = await make_campaign(api, [
        {"subject": "Welcome to pro", "delay_hours": 0, "template_id": template,
         "condition": {"type": "performed", "event": "plan.upgraded", "where": {"plan": "pro"},
                       "wait_hours": 24}},
    ])  # fmt: skip
    cid, email = campaign["id"], f"cy@{unique_domain()}"
    await api.post(f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": email}]})
    await waiting(api, cid, email, "wait_until")
    await track(api, email=email, event="plan.upgraded", properties={"plan": "team"})  # not pro
    body, accepted = await track(api, email=email, event="plan.upgraded", event_id=f"up-{email}",
                                 properties={"plan": "pro"})  # fmt: skip
    assert body["journeys_signalled"] == 1
    [message] = await messages(smtp, email, 1, timeout=10)
    assert subject(message) == b"Welcome to pro"
    print(f"tracked event accepted -> step received: {(message.at - accepted) * 1000:.0f} ms")  # noqa: T201
    assert message.at - accepted < 1.0
    done = await eventually(lambda: _finished(api, cid, email), f"{email}'s journey", 30)
    [step] = done["steps"]
    assert [e["event_id"] for e in step["evidence"]] == [f"up-{email}"]


async def test_a_goal_event_ends_the_journey_converted_and_the_funnel_shows_it(
    system: httpx.AsyncClient, smtp: SmtpSink
) -> None:
    api = system
    template = await make_template(api, HTML)
    campaign = await make_campaign(
        api,
        [{"subject": "Welcome", "delay_hours": 0, "template_id": template},
         {"subject": "Tomorrow", "delay_hours": 24, "template_id": template}],
        goal={"event": "order.completed", "window_hours": 72},
    )  # fmt: skip
    cid, d = campaign["id"], unique_domain()
    dee, eve = f"dee@{d}", f"eve@{d}"
    await api.post(
        f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": dee}, {"email": eve}]}
    )
    await messages(smtp, dee, 1)
    await waiting(api, cid, dee, "delay")
    body, accepted = await track(api, email=dee, event="order.completed", event_id=f"o-{dee}")
    assert body["journeys_signalled"] == 1
    view = await eventually(lambda: _finished(api, cid, dee), f"{dee}'s journey to end", 30)
    assert (view["status"], view["waiting_for"]) == ("converted", None)
    first_step = campaign["steps"][0]["id"]
    assert view["conversion"]["event_id"] == f"o-{dee}"
    assert (view["conversion"]["step_id"], view["conversion"]["step_order"]) == (first_step, 1)
    assert [s["step_order"] for s in view["steps"]] == [1]  # no later step
    funnel = (await api.get(f"/api/campaigns/{cid}/funnel")).json()
    assert {k: funnel[k] for k in ("recipients", "completed", "converted", "conversion_rate")} == {
        "recipients": 2, "completed": 1, "converted": 1, "conversion_rate": 0.5,
    }  # fmt: skip
    assert [s["converted"] for s in funnel["steps"]] == [1, 0]
    stats = (await api.get("/api/campaigns/stats", params={"campaign_id": cid})).json()
    assert stats == {"campaign_id": cid, "recipients": 2, "completed": 1, "completion_rate": 0.5,
                     "open_rate": 0, "click_rate": 0}  # fmt: skip
    converted = (await api.get(f"/api/campaigns/{cid}/recipients",
                               params={"status": "converted"})).json()  # fmt: skip
    assert [i["email"] for i in converted["items"]] == [dee]
    assert len(smtp.raw_to(dee)) == 1 and (await journey(api, cid, eve))["status"] == "active"


async def _finished(api: httpx.AsyncClient, cid: int, email: str) -> dict[str, Any] | None:
    view = await journey(api, cid, email)
    return view if view["finished_at"] else None
