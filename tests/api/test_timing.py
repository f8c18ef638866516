"""Send windows, delay_until and the frequency cap over HTTP: stored, shown only when set,
cloned, carried into the journey plan, and every bad value a 422 naming its field."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from domain.journey import DelayUntilPlan, SendWindowPlan
from storage.db import session_scope
from storage.plans import read_plan
from tests.support.factories import error_locs, make_campaign, make_template

WINDOW = {
    "days": ["fri", "mon", "tue", "wed", "thu", "mon"],
    "start": "09:00",
    "end": "17:00",
    "timezone": "recipient",
    "fallback_timezone": "America/New_York",
}
STORED_WINDOW = {**WINDOW, "days": ["mon", "tue", "wed", "thu", "fri"]}
NIGHT = {"days": ["sat"], "start": "20:00", "end": "02:00", "timezone": "Europe/Berlin"}


async def timed_campaign(api: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    template = await make_template(api)
    return await make_campaign(
        api,
        [
            {"subject": "Welcome", "delay_hours": 48, "template_id": template},
            {
                "subject": "Your trial ends tomorrow",
                "template_id": template,
                "delay_until": {"field": "trial_ends_at", "offset_hours": -24},
            },
            {
                "subject": "Saturday night",
                "delay_hours": 1,
                "template_id": template,
                "send_window": NIGHT,
            },  # fmt: skip
            {
                "subject": "Receipt",
                "delay_hours": 0,
                "template_id": template,
                "ignore_send_window": True,
            },  # fmt: skip
        ],
        activate=False,
        send_window=WINDOW,
        frequency_cap="apply",
        on_cap="skip",
        **extra,
    )


async def test_timing_is_stored_shown_when_set_and_cloned(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    campaign = await timed_campaign(api)
    assert campaign["send_window"] == STORED_WINDOW
    assert (campaign["frequency_cap"], campaign["on_cap"]) == ("apply", "skip")
    steps = (await api.get("/api/campaigns/steps", params={"campaign_id": campaign["id"]})).json()
    template = steps[0]["template_id"]
    assert [set(s) - {"id", "step_order", "subject", "template_id"} for s in steps] == [
        {"delay_hours"},
        {"delay_hours", "delay_until"},
        {"delay_hours", "send_window"},
        {"delay_hours", "ignore_send_window"},
    ]
    assert steps[1]["delay_hours"] == 0
    assert steps[1]["delay_until"] == {"field": "trial_ends_at", "offset_hours": -24}
    assert steps[2]["send_window"] == NIGHT  # nested nulls left out too
    assert steps[3]["ignore_send_window"] is True

    with session_scope(engine) as session:
        plan = read_plan(session, campaign["id"])
    assert plan is not None
    assert plan.send_window == SendWindowPlan(
        ["mon", "tue", "wed", "thu", "fri"], "09:00", "17:00", "recipient", "America/New_York"
    )
    assert (plan.frequency_cap, plan.on_cap) == ("apply", "skip")
    assert plan.steps[0].delay_seconds == 48 * 3600 and plan.steps[0].delay_until is None
    assert plan.steps[1].delay_until == DelayUntilPlan("trial_ends_at", -24)
    assert plan.steps[1].delay_seconds == 0
    assert plan.steps[2].send_window == SendWindowPlan(["sat"], "20:00", "02:00", "Europe/Berlin")
    assert [s.ignore_send_window for s in plan.steps] == [False, False, False, True]

    copy = (await api.post(f"/api/campaigns/{campaign['id']}/clone")).json()
    assert copy["send_window"] == STORED_WINDOW and copy["on_cap"] == "skip"
    copied = [{k: v for k, v in s.items() if k != "id"} for s in copy["steps"]]
    original = (await api.get(f"/api/campaigns/{campaign['id']}")).json()["steps"]
    assert copied == [{k: v for k, v in s.items() if k != "id"} for s in original]
    assert copied[0]["template_id"] == template


async def test_a_plain_campaign_shows_no_timing_on_its_steps(api: httpx.AsyncClient) -> None:
    template = await make_template(api)
    campaign = await make_campaign(
        api, [{"subject": "Hi", "delay_hours": 0, "template_id": template}], activate=False
    )
    assert campaign["send_window"] is None
    assert (campaign["frequency_cap"], campaign["on_cap"]) == ("apply", "defer")
    steps = (await api.get("/api/campaigns/steps", params={"campaign_id": campaign["id"]})).json()
    assert set(steps[0]) == {"id", "step_order", "subject", "delay_hours", "template_id"}


def step(**timing: Any) -> dict[str, Any]:
    return {"subject": "Hi", "delay_hours": 0, "template_id": 1, **timing}


@pytest.mark.parametrize(
    "body,loc",
    [
        ({"send_window": {**NIGHT, "timezone": "Mars/Olympus_Mons"}}, ["send_window", "timezone"]),
        ({"send_window": {**NIGHT, "days": []}}, ["send_window", "days"]),
        ({"send_window": {**NIGHT, "days": ["funday"]}}, ["send_window", "days", 0]),
        ({"send_window": {**NIGHT, "start": "9:00"}}, ["send_window", "start"]),
        ({"send_window": {**NIGHT, "end": "24:00"}}, ["send_window", "end"]),
        ({"send_window": {**NIGHT, "end": "20:00"}}, ["send_window", "end"]),
        ({"send_window": {**NIGHT, "timezone": "recipient"}}, ["send_window", "fallback_timezone"]),
        (
            {"send_window": {**WINDOW, "fallback_timezone": "Nowhere"}},
            ["send_window", "fallback_timezone"],
        ),
        ({"frequency_cap": "sometimes"}, ["frequency_cap"]),
        ({"on_cap": "drop"}, ["on_cap"]),
        (
            {"steps": [step(delay_until={"field": "x", "offset_hours": "soon"})]},
            ["steps", 0, "delay_until", "offset_hours"],
        ),
        ({"steps": [step(delay_until={"field": ""})]}, ["steps", 0, "delay_until", "field"]),
        (
            {"steps": [step(send_window={**NIGHT, "start": "25:00"})]},
            ["steps", 0, "send_window", "start"],
        ),
    ],
)
async def test_bad_timing_is_a_422_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, Any], loc: list[Any]
) -> None:
    response = await api.post("/api/campaigns", json={"name": "c", **body})
    assert response.status_code == 422, response.text
    assert ["body", *loc] in error_locs(response)


async def test_delay_until_and_a_delay_are_exclusive(api: httpx.AsyncClient) -> None:
    template = await make_template(api)
    response = await api.post(
        "/api/campaigns",
        json={
            "name": "c",
            "steps": [
                step(template_id=template, delay_hours=24, delay_until={"field": "renews_at"})
            ],
        },
    )
    assert response.status_code == 422
    assert error_locs(response) == [["body", "steps", 0, "delay_until"]]
    # on a draft's step: setting delay_until without zeroing delay_hours is refused too
    campaign = await make_campaign(
        api, [step(template_id=template, delay_hours=24)], activate=False
    )
    step_id = campaign["steps"][0]["id"]
    response = await api.patch(
        f"/api/campaigns/steps/{step_id}", json={"delay_until": {"field": "renews_at"}}
    )
    assert response.status_code == 422
    assert error_locs(response) == [["body", "delay_until"]]
    response = await api.patch(
        f"/api/campaigns/steps/{step_id}",
        json={"delay_hours": 0, "delay_until": {"field": "renews_at", "offset_hours": 2.5}},
    )
    assert response.status_code == 200, response.text
    assert response.json()["delay_until"] == {"field": "renews_at", "offset_hours": 2.5}
    response = await api.patch(
        f"/api/campaigns/steps/{step_id}", json={"delay_until": None, "delay_hours": 3}
    )
    assert response.status_code == 200 and "delay_until" not in response.json()
    response = await api.patch(
        f"/api/campaigns/steps/{step_id}",
        json={"send_window": NIGHT, "ignore_send_window": True},
    )
    assert response.status_code == 422
    assert error_locs(response) == [["body", "ignore_send_window"]]


async def test_a_campaigns_timing_changes_only_while_it_is_a_draft(api: httpx.AsyncClient) -> None:
    campaign = await timed_campaign(api)
    path = f"/api/campaigns/{campaign['id']}"
    response = await api.patch(path, json={"send_window": None, "on_cap": "defer"})
    assert response.status_code == 200, response.text
    assert response.json()["send_window"] is None and response.json()["on_cap"] == "defer"
    response = await api.patch(path, json={"send_window": NIGHT, "status": "active"})
    assert response.status_code == 200 and response.json()["status"] == "active"
    response = await api.patch(path, json={"frequency_cap": "exempt"})
    assert response.status_code == 409
    assert "only while it is a draft" in response.json()["detail"]
    response = await api.patch(path, json={"name": "renamed"})
    assert response.status_code == 200  # the rest still changes
    assert response.json()["send_window"] == {**NIGHT, "fallback_timezone": None}


async def test_the_frequency_cap_setting(api: httpx.AsyncClient) -> None:
    path = "/api/settings/frequency-cap"
    response = await api.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "no frequency cap is set"
    assert (await api.delete(path)).status_code == 404

    response = await api.put(path, json={"max_messages": 3, "per_hours": 24})
    assert response.status_code == 200, response.text
    assert {k: v for k, v in response.json().items() if k != "updated_at"} == {
        "max_messages": 3,
        "per_hours": 24,
    }
    response = await api.put(path, json={"max_messages": 1, "per_hours": 0.5})
    assert response.json()["max_messages"] == 1 and response.json()["per_hours"] == 0.5
    assert (await api.get(path)).json()["per_hours"] == 0.5

    for body, field in [
        ({"max_messages": 0, "per_hours": 24}, "max_messages"),
        ({"max_messages": 2.5, "per_hours": 24}, "max_messages"),
        ({"max_messages": 1, "per_hours": 0}, "per_hours"),
        ({"max_messages": 1, "per_hours": -3}, "per_hours"),
        ({"max_messages": 1, "per_hours": "24"}, "per_hours"),
        ({"max_messages": 1}, "per_hours"),
    ]:
        response = await api.put(path, json=body)
        assert response.status_code == 422, body
        assert error_locs(response) == [["body", field]], body
    assert (await api.get(path)).json()["max_messages"] == 1  # unchanged by the refusals

    assert (await api.delete(path)).status_code == 204
    assert (await api.get(path)).status_code == 404


async def test_the_funnel_counts_steps_held_by_the_cap(api: httpx.AsyncClient) -> None:
    campaign = await timed_campaign(api)
    funnel = (await api.get(f"/api/campaigns/{campaign['id']}/funnel")).json()
    assert all(s["deferred_by_cap"] == 0 and s["skipped_by_cap"] == 0 for s in funnel["steps"])
