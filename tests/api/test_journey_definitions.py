"""Campaign definitions of issue 12: conditions on tracked events (`performed`, `not_performed`
with `event`, `where`, `match`), wait-until (`wait_hours` on any condition), and a campaign's
`trigger`, `goal` and `reentry`. Every wrong field a 422 problem naming it; what is accepted
shows in the campaign view, in the steps endpoint only when set, edits on drafts only, and a
clone copies it all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import unique_domain
from tests.support.eventually import eventually
from tests.support.factories import error_locs, make_campaign, make_template
from tests.support.journey import journey
from tools.smtp_sink import SmtpSink

TRIGGER = {"event": "cart.abandoned", "where": {"store": "eu"}}
GOAL = {"event": "order.completed", "window_hours": 72}


def step(template: int, **extra: Any) -> dict[str, Any]:
    return {"subject": "s", "delay_hours": 1, "template_id": template, **extra}


def assert_422(response: httpx.Response, loc: list[Any]) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "validation_failed"
    assert error_locs(response) == [loc], body
    assert ".".join(map(str, loc)) in body["detail"]


async def test_every_wrong_definition_is_a_422_naming_the_field(api: httpx.AsyncClient) -> None:
    t = await make_template(api)
    first = step(t)
    performed = {"type": "performed", "event": "order.completed"}
    condition_cases: list[tuple[dict[str, Any], list[Any]]] = [
        # unknown condition types
        ({"type": "purchased", "event": "x"}, ["type"]),
        ({"type": "viewed", "step_order": 1}, ["type"]),
        # wait_hours <= 0 or not a number, on any type
        ({"type": "opened", "step_order": 1, "wait_hours": 0}, ["wait_hours"]),
        ({**performed, "wait_hours": -2}, ["wait_hours"]),
        ({"type": "clicked", "step_order": 1, "wait_hours": "48"}, ["wait_hours"]),
        ({"type": "clicked", "step_order": 1, "wait_hours": True}, ["wait_hours"]),
        # where not an object
        ({**performed, "where": "pro"}, ["where"]),
        ({**performed, "where": ["plan", "pro"]}, ["where"]),
        ({**performed, "where": {"plan": {"nested": 1}}}, ["where", "plan", "str"]),
        # event required for performed / not_performed, forbidden otherwise
        ({"type": "not_performed"}, ["event"]),
        ({"type": "performed", "event": ""}, ["event"]),
        ({"type": "performed", "event": "a" * 129}, ["event"]),
        ({"type": "performed", "event": "tab\there"}, ["event"]),
        ({"type": "opened", "step_order": 1, "event": "x"}, ["event"]),
        # a product condition names no step; where / match belong to product conditions
        ({**performed, "step_order": 1}, ["step_order"]),
        ({**performed, "step_id": 1}, ["step_id"]),
        ({"type": "opened", "step_order": 1, "where": {"a": 1}}, ["where"]),
        ({"type": "opened", "step_order": 1, "match": ["a"]}, ["match"]),
        ({**performed, "match": []}, ["match"]),
        ({**performed, "match": "cart_id"}, ["match"]),
    ]
    for condition, field in condition_cases:
        body = {"name": "bad", "trigger": TRIGGER, "steps": [first, step(t, condition=condition)]}
        response = await api.post("/api/campaigns", json=body)
        where = ["body", "steps", 1, "condition", *field]
        if field == ["where", "plan", "str"]:  # the union's first member names the failure
            assert response.status_code == 422
            assert all(loc[:6] == where[:6] for loc in error_locs(response)), response.text
            continue
        assert_422(response, where)

    campaign_cases: list[tuple[dict[str, Any], list[Any]]] = [
        # match without a trigger
        (
            {"steps": [step(t, condition={**performed, "match": ["cart_id"]})]},
            ["body", "steps", 0, "condition", "match"],
        ),
        # a goal without an event, with window_hours <= 0 or missing
        ({"goal": {"window_hours": 24}}, ["body", "goal", "event"]),
        ({"goal": {**GOAL, "window_hours": 0}}, ["body", "goal", "window_hours"]),
        ({"goal": {**GOAL, "window_hours": -1}}, ["body", "goal", "window_hours"]),
        ({"goal": {"event": "order.completed"}}, ["body", "goal", "window_hours"]),
        ({"goal": {**GOAL, "where": "x"}}, ["body", "goal", "where"]),
        ({"goal": {**GOAL, "exit": "sometimes"}}, ["body", "goal", "exit"]),
        # reentry.cooldown_hours < 0
        (
            {"reentry": {"allowed": True, "cooldown_hours": -1}},
            ["body", "reentry", "cooldown_hours"],
        ),
        ({"reentry": {"cooldown_hours": 1}}, ["body", "reentry", "allowed"]),
        # a trigger without its event, or with a where that is not an object
        ({"trigger": {"where": {"a": 1}}}, ["body", "trigger", "event"]),
        ({"trigger": {"event": "x", "where": 5}}, ["body", "trigger", "where"]),
        ({"trigger": {"event": "x", "when": "now"}}, ["body", "trigger", "when"]),
    ]
    for extra, loc in campaign_cases:
        assert_422(await api.post("/api/campaigns", json={"name": "bad", **extra}), loc)
    assert (await api.get("/api/campaigns")).json() == [], "a refused create left a campaign"

    # The same checks on a draft's steps and campaign PATCH.
    draft = await make_campaign(api, [first], activate=False)
    cid, step_id = draft["id"], draft["steps"][0]["id"]
    with_match = step(t, condition={**performed, "match": ["cart_id"]})
    appended = await api.post("/api/campaigns/steps", params={"campaign_id": cid}, json=with_match)
    assert_422(appended, ["body", "condition", "match"])
    edited = await api.patch(
        f"/api/campaigns/steps/{step_id}", json={"condition": {**performed, "match": ["id"]}}
    )
    assert_422(edited, ["body", "condition", "match"])
    edited = await api.patch(
        f"/api/campaigns/steps/{step_id}", json={"condition": {**performed, "wait_hours": 0}}
    )
    assert_422(edited, ["body", "condition", "wait_hours"])
    for body, loc in [
        ({"goal": {**GOAL, "window_hours": 0}}, ["body", "goal", "window_hours"]),
        (
            {"reentry": {"allowed": True, "cooldown_hours": -0.5}},
            ["body", "reentry", "cooldown_hours"],
        ),
        ({"trigger": {"event": "x", "where": []}}, ["body", "trigger", "where"]),
    ]:
        assert_422(await api.patch(f"/api/campaigns/{cid}", json=body), loc)

    # Removing the trigger while a step matches on it.
    matched = await make_campaign(api, [with_match], activate=False, trigger=TRIGGER)
    removed = await api.patch(f"/api/campaigns/{matched['id']}", json={"trigger": None})
    assert_422(removed, ["body", "trigger"])
    kept = (await api.get(f"/api/campaigns/{matched['id']}")).json()
    assert kept["trigger"] == TRIGGER


async def test_definitions_round_trip_and_show_only_when_set(api: httpx.AsyncClient) -> None:
    t = await make_template(api)
    campaign = await make_campaign(
        api,
        [
            step(t, delay_hours=0),
            step(
                t,
                condition={"type": "clicked", "step_order": 1, "wait_hours": 1.5},
                alternative={"subject": "alt", "template_id": t},
            ),
            step(
                t,
                condition={
                    "type": "not_performed",
                    "event": "order.completed",
                    "where": {"paid": True},
                    "match": ["cart_id"],
                    "wait_hours": 48,
                },
            ),
            step(t, condition={"type": "performed", "event": "Order Completed"}),
        ],
        activate=False,
        trigger=TRIGGER,
        goal={**GOAL, "where": {"plan": "pro"}, "exit": False},
        reentry={"allowed": True, "cooldown_hours": 720},
    )
    ids = [s["id"] for s in campaign["steps"]]
    shown = await api.get(f"/api/campaigns/{campaign['id']}")
    assert shown.json() == campaign
    assert campaign["trigger"] == TRIGGER
    assert campaign["goal"] == {
        "event": "order.completed",
        "where": {"plan": "pro"},
        "window_hours": 72,
        "exit": False,
    }
    assert campaign["reentry"] == {"allowed": True, "cooldown_hours": 720}

    steps = (await api.get("/api/campaigns/steps", params={"campaign_id": campaign["id"]})).json()
    assert "condition" not in steps[0]
    assert steps[1]["condition"] == {"type": "clicked", "step_id": ids[0], "wait_hours": 1.5}
    assert steps[2]["condition"] == {
        "type": "not_performed",
        "event": "order.completed",
        "where": {"paid": True},
        "match": ["cart_id"],
        "wait_hours": 48,
    }
    assert isinstance(steps[2]["condition"]["wait_hours"], int)
    assert steps[3]["condition"] == {"type": "performed", "event": "Order Completed"}
    # The spec's list shows exactly its fields, whatever the campaign defines.
    listed = (await api.get("/api/campaigns")).json()
    assert set(listed[0]) == {
        "id",
        "name",
        "status",
        "created_at",
        "steps_count",
        "recipients_count",
    }

    # A campaign without them says null in its view (and nothing in the steps endpoint).
    plain = await make_campaign(api, [step(t)], activate=False)
    assert (plain["trigger"], plain["goal"], plain["reentry"]) == (None, None, None)
    assert (
        await api.post("/api/campaigns", json={"name": "x", "reentry": {"allowed": False}})
    ).json()["reentry"] is None


async def test_drafts_edit_definitions_live_campaigns_refuse_and_clones_copy(
    api: httpx.AsyncClient,
) -> None:
    t = await make_template(api)
    draft = await make_campaign(
        api,
        [step(t, delay_hours=0), step(t, condition={"type": "not_opened", "step_order": 1})],
        activate=False,
    )
    cid, (first, second) = draft["id"], [s["id"] for s in draft["steps"]]

    patched = await api.patch(
        f"/api/campaigns/{cid}",
        json={"trigger": {"event": "trial.started"}, "goal": GOAL, "name": "Trial"},
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["name"] == "Trial"
    assert body["trigger"] == {"event": "trial.started", "where": None}
    assert body["goal"] == {**GOAL, "where": None, "exit": True}
    assert body["reentry"] is None

    # A step edited from an engagement condition to a product one (match now allowed), and back.
    product = {"type": "performed", "event": "trial.converted", "match": ["plan"], "wait_hours": 24}
    edited = await api.patch(f"/api/campaigns/steps/{second}", json={"condition": product})
    assert edited.status_code == 200, edited.text
    assert edited.json()["condition"] == {**product}
    back = await api.patch(
        f"/api/campaigns/steps/{second}",
        json={"condition": {"type": "opened", "step_id": first, "wait_hours": 2}},
    )
    assert back.json()["condition"] == {"type": "opened", "step_id": first, "wait_hours": 2}
    await api.patch(f"/api/campaigns/steps/{second}", json={"condition": product})
    # Omitted keeps; null removes (the goal, the re-entry); a new re-entry replaces.
    kept = await api.patch(f"/api/campaigns/{cid}", json={"reentry": {"allowed": True}})
    assert kept.json()["goal"] == body["goal"]
    assert kept.json()["reentry"] == {"allowed": True, "cooldown_hours": 0}
    cleared = (await api.patch(f"/api/campaigns/{cid}", json={"goal": None})).json()
    assert cleared["goal"] is None and cleared["trigger"] == body["trigger"]
    await api.patch(f"/api/campaigns/{cid}", json={"goal": GOAL})
    # The step condition's null removes every part of it.
    third = (
        await api.post(
            "/api/campaigns/steps",
            params={"campaign_id": cid},
            json=step(t, condition={"type": "not_performed", "event": "x", "wait_hours": 3}),
        )
    ).json()
    removed = await api.patch(f"/api/campaigns/steps/{third['id']}", json={"condition": None})
    assert "condition" not in removed.json()
    await api.delete(f"/api/campaigns/steps/{third['id']}")

    # Activation rules unchanged; a live campaign refuses definition changes (409), not names.
    active = await api.patch(f"/api/campaigns/{cid}", json={"status": "active"})
    assert active.status_code == 200, active.text
    definition = {k: active.json()[k] for k in ("trigger", "goal", "reentry")}
    for change in ({"goal": None}, {"trigger": {"event": "y"}}, {"reentry": {"allowed": False}}):
        refused = await api.patch(f"/api/campaigns/{cid}", json={**change, "name": "N"})
        assert refused.status_code == 409, refused.text
        assert "draft" in refused.json()["detail"]
    refused = await api.patch(f"/api/campaigns/steps/{second}", json={"condition": None})
    assert refused.status_code == 409
    now = (await api.get(f"/api/campaigns/{cid}")).json()
    assert {k: now[k] for k in definition} == definition and now["name"] == "Trial"

    clone = await api.post(f"/api/campaigns/{cid}/clone")
    assert clone.status_code == 201, clone.text
    copy = clone.json()
    assert copy["status"] == "draft"
    assert {k: copy[k] for k in definition} == definition
    assert copy["steps"][1]["condition"] == now["steps"][1]["condition"]
    assert copy["steps"][1]["id"] != now["steps"][1]["id"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_openapi_examples_of_the_new_models_are_what_the_api_takes(
    api: httpx.AsyncClient,
) -> None:
    schema = (await api.get("/openapi.json")).json()["components"]["schemas"]
    t = await make_template(api)
    condition = schema["ConditionIn"]["examples"][0]
    body = {
        "name": "from the examples",
        "trigger": schema["TriggerIn"]["examples"][0],
        "goal": schema["GoalIn"]["examples"][0],
        "reentry": schema["ReentryIn"]["examples"][0],
        "steps": [step(t), step(t, condition=condition)],
    }
    created = await api.post("/api/campaigns", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["steps"][1]["condition"]["event"] == condition["event"]


async def test_a_wait_until_defined_here_is_what_the_journey_runs(
    system: httpx.AsyncClient, smtp: SmtpSink
) -> None:
    """Through the real worker: the API's `wait_hours` reaches the journey's plan — it waits
    for the click, and sends the step the moment the click arrives, not at the end of the hour."""
    api = system
    t = await make_template(api, '<p><a href="https://app.example.com/go">Go</a></p>')
    campaign = await make_campaign(
        api,
        [
            {"subject": "Hello", "delay_hours": 0, "template_id": t},
            {
                "subject": "You clicked",
                "delay_hours": 0,
                "template_id": t,
                "condition": {"type": "clicked", "step_order": 1, "wait_hours": 1},
                "alternative": {"subject": "Missed you", "template_id": t},
            },
        ],
        goal=GOAL,
    )
    email = f"waiter@{unique_domain()}"
    enrolled = await api.post(
        f"/api/campaigns/{campaign['id']}/recipients", json={"recipients": [{"email": email}]}
    )
    assert enrolled.json()["enrolled"] == 1, enrolled.text

    async def waiting() -> dict[str, Any] | None:
        view = await journey(api, campaign["id"], email)
        pending = view.get("waiting_for") or {}
        return view if pending.get("kind") == "wait_until" else None

    view = await eventually(waiting, what="the wait for the click")
    until = datetime.fromisoformat(view["waiting_for"]["until"].replace("Z", "+00:00"))
    assert timedelta(minutes=59) < until - datetime.now(UTC) <= timedelta(hours=1)
    clicked = await api.post(
        "/api/events",
        json={
            "delivery_id": view["steps"][0]["delivery_id"],
            "type": "click",
            "url": "https://app.example.com/go",
        },
    )
    assert clicked.status_code == 202, clicked.text

    async def second() -> list[str] | None:
        subjects = sorted(str(m["Subject"]) for m in smtp.to(email))
        return subjects if len(subjects) == 2 else None

    assert await eventually(second, timeout=20, what="step 2") == ["Hello", "You clicked"]
