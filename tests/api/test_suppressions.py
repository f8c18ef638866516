"""`/api/suppressions`: list, add (ending every running journey of the address), lift; and
enrolling a suppressed address is refused with its reason."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy.engine import Engine

from settings import Settings
from storage.db import session_scope
from storage.models import Suppression
from storage.suppression import hashed
from tests.conftest import unique_domain
from tests.support.enroll import enroll
from tests.support.factories import error_locs, make_campaign, make_template
from tests.support.journey import ended, ended_by_signal
from tests.support.mailbox import received
from tools.smtp_sink import SmtpSink

NEXT_STEP_AFTER = 15.0  # seconds


@pytest.fixture
def settings(settings: Settings, smtp: SmtpSink) -> Settings:
    return settings.model_copy(update={"smtp_url": smtp.url})


async def test_add_list_filter_page_and_lift(api: httpx.AsyncClient) -> None:
    domain = unique_domain()
    created = await api.post("/api/suppressions", json={"email": f" Ann@{domain} "})
    assert created.status_code == 201, created.text
    ann = created.json()
    assert (ann["email"], ann["reason"], ann["source"]) == (f"ann@{domain}", "manual", "api")
    assert ann["created_at"].endswith("Z")

    # Already there: 200 with the entry as it was (its first reason and time are kept).
    again = await api.post("/api/suppressions", json={"email": f"ann@{domain}", "reason": "other"})
    assert again.status_code == 200 and again.json() == ann

    for name, reason in (("bob", "complaint"), ("cy", "bounce_hard")):
        response = await api.post(
            "/api/suppressions", json={"email": f"{name}@{domain}", "reason": reason}
        )
        assert response.status_code == 201

    listed = (await api.get("/api/suppressions")).json()
    assert listed["total"] == 3 and len(listed["items"]) == 3
    assert listed["items"][0]["email"] == f"cy@{domain}"  # newest first
    page = (await api.get("/api/suppressions", params={"limit": 2, "offset": 2})).json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 2)
    assert [i["email"] for i in page["items"]] == [f"ann@{domain}"]
    one = (await api.get("/api/suppressions", params={"email": f"BOB@{domain}"})).json()
    assert one["total"] == 1 and one["items"][0]["reason"] == "complaint"
    by_reason = (await api.get("/api/suppressions", params={"reason": "bounce_hard"})).json()
    assert [i["email"] for i in by_reason["items"]] == [f"cy@{domain}"]

    assert (await api.delete(f"/api/suppressions/BOB@{domain}")).status_code == 204
    assert (await api.get("/api/suppressions", params={"email": f"bob@{domain}"})).json()[
        "total"
    ] == 0
    missing = await api.delete(f"/api/suppressions/bob@{domain}")
    assert missing.status_code == 404 and "bob@" in missing.json()["detail"]


async def test_an_erased_persons_hashed_entry_is_found_kept_and_lifted_by_address(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    address = f"gone@{unique_domain()}"
    with session_scope(engine) as session:  # what an erasure leaves behind
        session.add(Suppression(email=hashed(address), reason="unsubscribe", source="self"))
    found = (await api.get("/api/suppressions", params={"email": address.upper()})).json()
    assert [i["email"] for i in found["items"]] == [hashed(address)]
    again = await api.post("/api/suppressions", json={"email": address})
    assert again.status_code == 200 and again.json()["reason"] == "unsubscribe"
    assert (await api.get("/api/suppressions")).json()["total"] == 1  # no plain copy added
    assert (await api.delete(f"/api/suppressions/{address}")).status_code == 204
    assert (await api.get("/api/suppressions")).json()["total"] == 0


async def test_bad_input_is_a_422_naming_the_field(api: httpx.AsyncClient) -> None:
    cases = [
        ({"email": "not-an-address"}, ["body", "email"]),
        ({"email": "a@b@c.example"}, ["body", "email"]),
        ({}, ["body", "email"]),
        ({"email": 42}, ["body", "email"]),
        ({"email": "x@example.com", "reason": ""}, ["body", "reason"]),
        ({"email": "x@example.com", "extra": 1}, ["body", "extra"]),
    ]
    for body, loc in cases:
        response = await api.post("/api/suppressions", json=body)
        assert response.status_code == 422, (body, response.text)
        assert loc in error_locs(response), (body, response.json())
    for params, loc in (({"limit": 0}, ["query", "limit"]), ({"offset": -1}, ["query", "offset"])):
        response = await api.get("/api/suppressions", params=params)
        assert response.status_code == 422 and loc in error_locs(response)
    assert (await api.get("/api/suppressions")).json()["total"] == 0


async def test_enrolling_a_suppressed_address_is_rejected_with_its_reason(
    api: httpx.AsyncClient,
) -> None:
    template = await make_template(api)
    campaign = await make_campaign(
        api, [{"subject": "Hi", "delay_hours": 1, "template_id": template}]
    )
    domain = unique_domain()
    blocked, fine = f"blocked@{domain}", f"fine@{domain}"
    response = await api.post("/api/suppressions", json={"email": blocked, "reason": "complaint"})
    assert response.status_code == 201
    result = await enroll(api, campaign["id"], blocked.upper(), fine)
    assert result["enrolled"] == 1
    assert result["rejected"] == [{"email": blocked, "reason": "suppressed: complaint"}]
    listed = (await api.get(f"/api/campaigns/{campaign['id']}/recipients")).json()
    assert [r["email"] for r in listed["items"]] == [fine]
    # Lifted: the address can be enrolled (here, in the campaign it was refused from).
    assert (await api.delete(f"/api/suppressions/{blocked}")).status_code == 204
    assert (await enroll(api, campaign["id"], blocked))["enrolled"] == 1


async def test_suppressing_ends_running_journeys_in_every_campaign(
    api: httpx.AsyncClient, worker: None, smtp: SmtpSink
) -> None:
    template = await make_template(api)
    campaigns = [
        await make_campaign(
            api,
            [
                {"subject": f"{name} 1", "delay_hours": 0, "template_id": template},
                # The journeys must end well before this is due: by signal.
                {
                    "subject": f"{name} 2",
                    "delay_hours": NEXT_STEP_AFTER / 3600,
                    "template_id": template,
                },
            ],
            name=name,
        )
        for name in ("News", "Tips")
    ]
    domain = unique_domain()
    manual, complained, control = f"manual@{domain}", f"complained@{domain}", f"control@{domain}"
    for campaign in campaigns:
        await enroll(api, campaign["id"], manual)
    await enroll(api, campaigns[0]["id"], complained, control)
    await received(smtp, manual, 2)
    await received(smtp, complained, 1)
    await received(smtp, control, 1)

    response = await api.post("/api/suppressions", json={"email": manual.upper()})
    assert response.status_code == 201
    response = await api.post(
        "/api/suppressions", json={"email": complained, "reason": "complaint"}
    )
    assert response.status_code == 201

    for campaign in campaigns:
        view = await ended(api, campaign["id"], manual)
        ended_by_signal(view, NEXT_STEP_AFTER)
        assert (view["status"], view["status_reason"]) == ("suppressed", "suppressed: manual")
        assert len(view["steps"]) == 1
    view = await ended(api, campaigns[0]["id"], complained)
    ended_by_signal(view, NEXT_STEP_AFTER)
    assert view["status"] == "complained"

    await received(smtp, control, 2, timeout=40)
    await asyncio.sleep(1)
    assert len(smtp.to(manual)) == 2 and len(smtp.to(complained)) == 1
