"""The per-step funnel and the stats, from a real campaign run (dev server, worker, SMTP sink)
and events posted to the API: every figure matches what happened, each delivery counts once
however often an event repeats, and the running counters agree with the rows they count."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import Session

from storage import counters
from storage.db import session_scope
from storage.models import Conversion, Enrollment
from tests.conftest import unique_domain
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template
from tests.support.journey import journey
from tools.smtp_sink import SmtpSink

SECOND = 1 / 3600  # delay_hours for one second
PIXEL = re.compile(r'src="(http://[^"]+/t/o/[^"]+\.gif)"')


async def post_event(api: httpx.AsyncClient, delivery_id: str, type: str, **extra: str) -> None:
    response = await api.post(
        "/api/events", json={"delivery_id": delivery_id, "type": type, **extra}
    )
    assert response.status_code == 202, response.text


async def delivery_of(api: httpx.AsyncClient, cid: int, email: str, step_order: int) -> str:
    steps = (await journey(api, cid, email))["steps"]
    return next(s["delivery_id"] for s in steps if s["step_order"] == step_order)


async def test_funnel_counts_each_step_from_a_real_run(
    system: httpx.AsyncClient, smtp: SmtpSink, engine: Engine
) -> None:
    api = system
    html = '<p>Hi</p><a href="https://app.example.com/start">Start</a>'
    main, other = await make_template(api, html), await make_template(api, html)
    campaign = await make_campaign(api, [
        {"subject": "Welcome", "delay_hours": 0, "template_id": main},
        # Long enough for the test to post step 1's events before step 2 decides.
        {"subject": "Since you opened", "delay_hours": 10 * SECOND, "template_id": main,
         "condition": {"type": "opened", "step_order": 1},
         "alternative": {"subject": "In case you missed it", "template_id": other}},
        {"subject": "Since you clicked", "delay_hours": 1 * SECOND, "template_id": main,
         "condition": {"type": "clicked", "step_order": 1}},
    ])  # fmt: skip
    cid, d = campaign["id"], unique_domain()
    ana, ben, cy, dee = (f"{name}@{d}" for name in ("ana", "ben", "cy", "dee"))
    smtp.rcpt_replies[dee] = "550 5.1.1 <dee>: Recipient address rejected"
    enrolled = await api.post(
        f"/api/campaigns/{cid}/recipients",
        json={"recipients": [{"email": e} for e in (ana, ben, cy, dee)]},
    )
    assert enrolled.json()["enrolled"] == 4

    async def first_messages() -> bool:
        return all(smtp.to(e) for e in (ana, ben, cy))

    await eventually(first_messages, timeout=60, what="step 1 to reach ana, ben and cy")
    ana_1, ben_1, cy_1 = [await delivery_of(api, cid, e, 1) for e in (ana, ben, cy)]
    await post_event(api, ana_1, "delivered")
    await post_event(api, ana_1, "open", event_id="ana-open-1")
    await post_event(api, ana_1, "open", event_id="ana-open-1")  # a provider retry
    await post_event(api, ana_1, "open", event_id="ana-open-2")  # opened again: one delivery
    await post_event(api, ana_1, "click", url="https://app.example.com/start")
    await post_event(api, ben_1, "delivered")
    pixel = PIXEL.search(smtp.to(ben)[0].get_body(("html",)).get_content()).group(1)  # type: ignore[union-attr]
    async with httpx.AsyncClient() as browserless:  # an HTTP library, not a person
        assert (await browserless.get(pixel)).status_code == 200
    await post_event(api, cy_1, "unsubscribe")

    async def finished() -> bool:
        stats = (await api.get("/api/campaigns/stats", params={"campaign_id": cid})).json()
        return stats["completed"] == 2 and (await journey(api, cid, cy))["status"] == "unsubscribed"

    await eventually(finished, timeout=90, what="ana's and ben's journeys to complete")
    await post_event(api, await delivery_of(api, cid, ana, 2), "open")

    funnel = (await api.get(f"/api/campaigns/{cid}/funnel")).json()
    assert (funnel["campaign_id"], funnel["recipients"], funnel["completed"]) == (cid, 4, 2)
    steps = funnel["steps"]
    assert [(s["step_order"], s["subject"]) for s in steps] == [
        (1, "Welcome"),
        (2, "Since you opened"),
        (3, "Since you clicked"),
    ]
    zero = dict.fromkeys(
        ["reached", "sent", "alternative_sent", "skipped", "delivered", "opened", "clicked",
         "bounced", "unsubscribed", "complained", "opened_including_machine",
         "clicked_including_machine"], 0,
    )  # fmt: skip

    def figures(step: dict) -> dict:  # type: ignore[type-arg]
        return {k: v for k, v in step.items() if k in zero}

    assert figures(steps[0]) == {
        **zero, "reached": 4, "sent": 3, "delivered": 2, "opened": 1, "clicked": 1,
        "bounced": 1, "unsubscribed": 1, "opened_including_machine": 2,
        "clicked_including_machine": 1,
    }  # fmt: skip
    assert figures(steps[1]) == {
        **zero, "reached": 2, "sent": 1, "alternative_sent": 1, "opened": 1,
        "opened_including_machine": 1,
    }  # fmt: skip
    assert figures(steps[2]) == {**zero, "reached": 2, "sent": 1, "skipped": 1}

    stats = (await api.get("/api/campaigns/stats", params={"campaign_id": cid})).json()
    assert stats == {"campaign_id": cid, "recipients": 4, "completed": 2, "completion_rate": 0.5,
                     "open_rate": 0.25, "click_rate": 0.25}  # fmt: skip
    with Session(engine) as session:  # the running counters say what the rows say
        assert counters.read(session, cid) == counters.from_rows(session, cid)


async def test_funnel_of_a_campaign_without_recipients_and_of_none(
    system: httpx.AsyncClient,
) -> None:
    api = system
    template = await make_template(api)
    draft = await make_campaign(
        api, [{"subject": "One", "delay_hours": 1, "template_id": template}], activate=False
    )
    funnel = (await api.get(f"/api/campaigns/{draft['id']}/funnel")).json()
    assert funnel["recipients"] == 0 and funnel["steps"][0]["reached"] == 0
    assert (await api.get("/api/campaigns/999999/funnel")).status_code == 404


async def test_an_erased_person_leaves_the_stats_but_not_the_funnel_totals(
    system: httpx.AsyncClient, smtp: SmtpSink
) -> None:
    api = system
    template = await make_template(api)
    campaign = await make_campaign(
        api, [{"subject": "One", "delay_hours": 0, "template_id": template}]
    )
    cid, d = campaign["id"], unique_domain()
    ana, ben = f"ana@{d}", f"ben@{d}"
    await api.post(
        f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": ana}, {"email": ben}]}
    )

    async def sent() -> bool:
        return bool(smtp.to(ana) and smtp.to(ben))

    await eventually(sent, timeout=60, what="both messages")
    await post_event(api, await delivery_of(api, cid, ana, 1), "open")
    stats = (await api.get("/api/campaigns/stats", params={"campaign_id": cid})).json()
    assert (stats["recipients"], stats["open_rate"]) == (2, 0.5)
    assert (await api.delete(f"/api/recipients/{ana}")).status_code == 200
    stats = (await api.get("/api/campaigns/stats", params={"campaign_id": cid})).json()
    assert (stats["recipients"], stats["open_rate"]) == (1, 0)
    [step] = (await api.get(f"/api/campaigns/{cid}/funnel")).json()["steps"]
    assert (step["reached"], step["sent"], step["opened"]) == (2, 2, 1)  # anonymous totals


async def test_conversions_in_the_funnel_and_converted_journeys_completed_in_the_stats(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    """Rows as the tracking endpoint and the journeys write them (a conversion attributed to
    step 2, one before any message; a journey its goal ended): the funnel shows `converted` per
    step and at the top with its rate; the spec's stats keep their fields, converted counted as
    completed."""
    template = await make_template(api)
    campaign = await make_campaign(
        api,
        [{"subject": s, "delay_hours": 1, "template_id": template} for s in ("One", "Two")],
        activate=False,
    )
    cid = campaign["id"]
    one, two = (s["id"] for s in campaign["steps"])
    with session_scope(engine) as session:
        people = [
            Enrollment(campaign_id=cid, email=f"{n}@x.example", workflow_id=n, status=s)
            for n, s in (("a", "converted"), ("b", "active"), ("c", "completed"), ("d", "active"))
        ]
        session.add_all(people)
        session.flush()
        a, b = people[0].id or 0, people[1].id or 0
        session.add_all(
            [
                Conversion(enrollment_id=a, campaign_id=cid, step_id=two, step_order=2,
                           event_id="evt_a", occurred_at=datetime.now(UTC)),
                Conversion(enrollment_id=b, campaign_id=cid, step_id=0, step_order=0,
                           event_id="evt_b", occurred_at=datetime.now(UTC)),
            ]
        )  # fmt: skip
        session.flush()
        counters.rebuild(session, cid)
    funnel = (await api.get(f"/api/campaigns/{cid}/funnel")).json()
    assert {k: funnel[k] for k in ("recipients", "completed", "converted", "conversion_rate")} == {
        "recipients": 4, "completed": 2, "converted": 2, "conversion_rate": 0.5,
    }  # fmt: skip
    assert [(s["step_id"], s["converted"]) for s in funnel["steps"]] == [(one, 0), (two, 1)]
    stats = (await api.get("/api/campaigns/stats", params={"campaign_id": cid})).json()
    assert stats == {"campaign_id": cid, "recipients": 4, "completed": 2, "completion_rate": 0.5,
                     "open_rate": 0, "click_rate": 0}  # fmt: skip
