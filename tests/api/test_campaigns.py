"""Templates, campaigns and steps: the spec's shapes exactly, and every error a clear 4xx."""

from __future__ import annotations

import re

import httpx

from tests.support.factories import error_locs, make_campaign, make_template

SPEC_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def test_spec_endpoints_return_exactly_the_spec_fields(api: httpx.AsyncClient) -> None:
    t1, t2 = await make_template(api), await make_template(api)
    campaign = await make_campaign(
        api,
        [
            {"subject": "Welcome to the platform", "delay_hours": 0, "template_id": t1},
            {"subject": "Getting started guide", "delay_hours": 24, "template_id": t2},
            {
                "subject": "Still interested?",
                "delay_hours": 48,
                "template_id": t1,
                "condition": {"type": "not_opened", "step_order": 2},
            },
            {
                "subject": "Half hour",
                "delay_hours": 0.5,
                "template_id": t1,
                "condition": {"type": "clicked", "step_order": 1, "url": "https://x.example/a"},
                "alternative": {"subject": "Missed you", "template_id": t2},
            },
        ],
        activate=False,
    )
    listed = (await api.get("/api/campaigns")).json()
    assert listed == [
        {
            "id": campaign["id"],
            "name": "Onboarding",
            "status": "draft",
            "created_at": listed[0]["created_at"],
            "steps_count": 4,
            "recipients_count": 0,
        }
    ]
    assert SPEC_TIME.match(listed[0]["created_at"])

    steps = (await api.get("/api/campaigns/steps", params={"campaign_id": campaign["id"]})).json()
    ids = [s["id"] for s in steps]
    assert steps[0] == {
        "id": ids[0],
        "step_order": 1,
        "subject": "Welcome to the platform",
        "delay_hours": 0,
        "template_id": t1,
    }
    assert isinstance(steps[1]["delay_hours"], int) and steps[1]["delay_hours"] == 24
    assert steps[2] == {
        "id": ids[2],
        "step_order": 3,
        "subject": "Still interested?",
        "delay_hours": 48,
        "template_id": t1,
        "condition": {"type": "not_opened", "step_id": ids[1]},
    }
    assert steps[3]["delay_hours"] == 0.5
    assert steps[3]["condition"] == {
        "type": "clicked",
        "step_id": ids[0],
        "url": "https://x.example/a",
    }
    assert steps[3]["alternative"] == {"subject": "Missed you", "template_id": t2}

    stats = (await api.get("/api/campaigns/stats", params={"campaign_id": campaign["id"]})).json()
    assert stats == {
        "campaign_id": campaign["id"],
        "recipients": 0,
        "completed": 0,
        "completion_rate": 0,
        "open_rate": 0,
        "click_rate": 0,
    }


async def test_campaign_id_parameter_errors(api: httpx.AsyncClient) -> None:
    for path in ("/api/campaigns/steps", "/api/campaigns/stats"):
        missing = await api.get(path)
        assert missing.status_code == 422 and ["query", "campaign_id"] in error_locs(missing)
        not_int = await api.get(path, params={"campaign_id": "abc"})
        assert not_int.status_code == 422 and ["query", "campaign_id"] in error_locs(not_int)
        unknown = await api.get(path, params={"campaign_id": 999999})
        assert unknown.status_code == 404
    assert (await api.get("/api/campaigns/999999")).status_code == 404


async def test_bad_step_input_is_a_422_naming_the_field(api: httpx.AsyncClient) -> None:
    t = await make_template(api)
    ok = {"subject": "s", "delay_hours": 1, "template_id": t}
    cases = [
        (
            {"subject": "s", "delay_hours": -1, "template_id": t},
            ["body", "steps", 0, "delay_hours"],
        ),
        (
            {"subject": "s", "delay_hours": "soon", "template_id": t},
            ["body", "steps", 0, "delay_hours"],
        ),
        (
            {"subject": "s", "delay_hours": 1, "template_id": 987654},
            ["body", "steps", 0, "template_id"],
        ),
        (
            {**ok, "condition": {"type": "opened", "step_order": 1}},
            ["body", "steps", 0, "condition", "step_order"],
        ),
        (
            {**ok, "condition": {"type": "opened", "step_order": 1, "url": "https://x"}},
            ["body", "steps", 0, "condition"],
        ),
        (
            {**ok, "condition": {"type": "viewed", "step_order": 1}},
            ["body", "steps", 0, "condition", "type"],
        ),
        (
            {
                **ok,
                "condition": {"type": "clicked", "step_order": 1},
                "alternative": {"subject": "x"},
            },
            ["body", "steps", 0, "alternative", "template_id"],
        ),
        ({**ok, "alternative": {"subject": "x", "template_id": t}}, ["body", "steps", 0]),
    ]
    for step, loc in cases:
        response = await api.post("/api/campaigns", json={"name": "bad", "steps": [step]})
        assert response.status_code == 422, (step, response.text)
        assert any(got[: len(loc)] == loc for got in error_locs(response)), (loc, response.json())
    # A condition on a later step, by order, in the same payload.
    response = await api.post(
        "/api/campaigns",
        json={
            "name": "bad",
            "steps": [{**ok, "condition": {"type": "opened", "step_order": 2}}, ok],
        },
    )
    assert response.status_code == 422
    assert (await api.get("/api/campaigns")).json() == [], (
        "a rejected create left a campaign behind"
    )


async def test_malformed_json_is_a_422(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/campaigns", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


async def test_condition_on_another_campaigns_step_is_rejected(api: httpx.AsyncClient) -> None:
    t = await make_template(api)
    other = await make_campaign(
        api, [{"subject": "a", "delay_hours": 0, "template_id": t}], activate=False
    )
    other_step = other["steps"][0]["id"]
    draft = await make_campaign(
        api, [{"subject": "a", "delay_hours": 0, "template_id": t}], activate=False
    )
    response = await api.post(
        "/api/campaigns/steps",
        params={"campaign_id": draft["id"]},
        json={
            "subject": "b",
            "delay_hours": 1,
            "template_id": t,
            "condition": {"type": "opened", "step_id": other_step},
        },
    )
    assert response.status_code == 422 and ["body", "condition", "step_id"] in error_locs(response)


async def test_draft_steps_append_edit_reorder_delete(api: httpx.AsyncClient) -> None:
    t = await make_template(api)
    campaign = await make_campaign(
        api, [{"subject": "one", "delay_hours": 0, "template_id": t}], activate=False
    )
    cid = campaign["id"]
    added = await api.post(
        "/api/campaigns/steps",
        params={"campaign_id": cid},
        json={"subject": "two", "delay_hours": 2, "template_id": t},
    )
    assert added.status_code == 201 and added.json()["step_order"] == 2
    third = (
        await api.post(
            "/api/campaigns/steps",
            params={"campaign_id": cid},
            json={
                "subject": "three",
                "delay_hours": 1,
                "template_id": t,
                "condition": {"type": "not_opened", "step_id": added.json()["id"]},
            },
        )
    ).json()
    edited = await api.patch(f"/api/campaigns/steps/{added.json()['id']}", json={"subject": "TWO"})
    assert edited.json()["subject"] == "TWO"
    first = campaign["steps"][0]["id"]
    bad_order = await api.post(
        "/api/campaigns/steps/reorder",
        params={"campaign_id": cid},
        json={"step_ids": [third["id"], first, added.json()["id"]]},
    )
    assert bad_order.status_code == 422
    reordered = await api.post(
        "/api/campaigns/steps/reorder",
        params={"campaign_id": cid},
        json={"step_ids": [added.json()["id"], first, third["id"]]},
    )
    assert [s["subject"] for s in reordered.json()] == ["TWO", "one", "three"]
    in_use = await api.delete(f"/api/campaigns/steps/{added.json()['id']}")
    assert in_use.status_code == 409
    assert (await api.delete(f"/api/campaigns/steps/{third['id']}")).status_code == 204
    steps = (await api.get("/api/campaigns/steps", params={"campaign_id": cid})).json()
    assert [(s["step_order"], s["subject"]) for s in steps] == [(1, "TWO"), (2, "one")]


async def test_status_transitions_and_pinned_steps(api: httpx.AsyncClient) -> None:
    t = await make_template(api)
    empty = await make_campaign(api, [], activate=False)
    assert (
        await api.patch(f"/api/campaigns/{empty['id']}", json={"status": "active"})
    ).status_code == 409
    campaign = await make_campaign(api, [{"subject": "one", "delay_hours": 0, "template_id": t}])
    cid, step_id = campaign["id"], campaign["steps"][0]["id"]
    assert campaign["status"] == "active"
    assert (await api.patch(f"/api/campaigns/{cid}", json={"status": "draft"})).status_code == 409
    for attempt in (
        api.post(
            "/api/campaigns/steps",
            params={"campaign_id": cid},
            json={"subject": "x", "delay_hours": 0, "template_id": t},
        ),
        api.patch(f"/api/campaigns/steps/{step_id}", json={"subject": "x"}),
        api.delete(f"/api/campaigns/steps/{step_id}"),
        api.delete(f"/api/campaigns/{cid}"),
    ):
        response = await attempt
        assert response.status_code == 409, response.text
        assert isinstance(response.json()["detail"], str)
    assert (await api.patch(f"/api/campaigns/{cid}", json={"status": "paused"})).json()[
        "status"
    ] == "paused"
    assert (await api.patch(f"/api/campaigns/{cid}", json={"status": "active"})).json()[
        "status"
    ] == "active"
    assert (await api.patch(f"/api/campaigns/{cid}", json={"name": "Renamed"})).json()[
        "name"
    ] == "Renamed"
    assert (await api.patch(f"/api/campaigns/{cid}", json={"status": "archived"})).json()[
        "status"
    ] == "archived"
    assert (await api.patch(f"/api/campaigns/{cid}", json={"status": "active"})).status_code == 409
    clone = await api.post(f"/api/campaigns/{cid}/clone")
    assert clone.status_code == 201 and clone.json()["status"] == "draft"
    assert [s["subject"] for s in clone.json()["steps"]] == ["one"]
    assert (await api.delete(f"/api/campaigns/{clone.json()['id']}")).status_code == 204


async def test_templates_crud_and_compile_errors(api: httpx.AsyncClient) -> None:
    bad = await api.post("/api/templates", json={"name": "x", "html": "<p>{% if %}</p>"})
    assert bad.status_code == 422 and ["body", "html"] in error_locs(bad)
    tid = await make_template(api)
    assert (await api.get(f"/api/templates/{tid}")).json()["name"] == "t"
    updated = await api.patch(
        f"/api/templates/{tid}", json={"name": "renamed", "text": "Hi {{ email }}"}
    )
    assert updated.json()["name"] == "renamed"
    preview = await api.post(
        f"/api/templates/{tid}/preview",
        json={"email": "a@b.example", "fields": {"first_name": "Ana"}},
    )
    assert preview.json()["html"] == "<p>Hi Ana</p>" and preview.json()["text"] == "Hi a@b.example"
    await make_campaign(
        api, [{"subject": "s", "delay_hours": 0, "template_id": tid}], activate=False
    )
    assert (await api.delete(f"/api/templates/{tid}")).status_code == 409
    unused = await make_template(api)
    assert (await api.delete(f"/api/templates/{unused}")).status_code == 204
    assert (await api.get(f"/api/templates/{unused}")).status_code == 404
