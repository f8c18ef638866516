"""A/B variants over HTTP: stored, shown on the spec's steps endpoint only when set, cloned,
and every bad split a 422 naming its field."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.factories import error_locs, make_campaign, make_template


def split(template: int, **extra: Any) -> dict[str, Any]:
    return {
        "subject": "Welcome",
        "delay_hours": 0,
        "template_id": template,
        "variants": [
            {"name": "A", "subject": "Welcome aboard", "template_id": template, "weight": 1},
            {"name": "B", "subject": "You're in", "template_id": template, "weight": 1},
            {"name": "control", "holdout": True, "weight": 0.5},
        ],
        **extra,
    }


async def test_variants_are_stored_shown_when_set_and_cloned(api: httpx.AsyncClient) -> None:
    template = await make_template(api)
    winner = {"metric": "click_rate", "after_hours": 24}
    campaign = await make_campaign(
        api,
        [
            split(template, winner=winner),
            {"subject": "Hi", "delay_hours": 1, "template_id": template},
        ],
        activate=False,
    )
    steps = (await api.get("/api/campaigns/steps", params={"campaign_id": campaign["id"]})).json()
    assert steps[0]["variants"] == [
        {"name": "A", "subject": "Welcome aboard", "template_id": template, "weight": 1},
        {"name": "B", "subject": "You're in", "template_id": template, "weight": 1},
        {"name": "control", "weight": 0.5, "holdout": True},
    ]
    assert steps[0]["winner"] == winner  # not chosen yet: no `chosen`
    assert "variants" not in steps[1] and "winner" not in steps[1]
    shown = (await api.get(f"/api/campaigns/{campaign['id']}")).json()["steps"]
    assert shown[0]["variants"] == steps[0]["variants"]
    assert "variants" not in shown[1]

    copy = (await api.post(f"/api/campaigns/{campaign['id']}/clone")).json()
    assert copy["steps"][0]["variants"] == steps[0]["variants"]
    assert copy["steps"][0]["winner"] == winner

    # A draft's step: variants replaced, then removed with the winner.
    step_id = steps[0]["id"]
    two = [{"name": "x", "subject": "X", "template_id": template, "weight": 2},
           {"name": "y", "subject": "Y", "template_id": template, "weight": 3}]  # fmt: skip
    changed = await api.patch(f"/api/campaigns/steps/{step_id}", json={"variants": two})
    assert changed.status_code == 200, changed.text
    assert [v["name"] for v in changed.json()["variants"]] == ["x", "y"]
    refused = await api.patch(f"/api/campaigns/steps/{step_id}", json={"variants": None})
    assert refused.status_code == 422
    assert error_locs(refused) == [["body", "winner"]]  # the winner needs them
    cleared = await api.patch(
        f"/api/campaigns/steps/{step_id}", json={"variants": None, "winner": None}
    )
    assert cleared.status_code == 200, cleared.text
    assert "variants" not in cleared.json() and "winner" not in cleared.json()


async def test_bad_splits_are_422_naming_the_field(api: httpx.AsyncClient) -> None:
    template = await make_template(api)
    one = {"name": "A", "subject": "S", "template_id": template, "weight": 1}

    def variant(name: str, **extra: Any) -> dict[str, Any]:
        return {**one, "name": name, **extra}

    cases: list[tuple[dict[str, Any], list[Any]]] = [
        ({"variants": [one]}, ["body", "steps", 0, "variants"]),
        ({"variants": [variant(n) for n in "ABCDE"]}, ["body", "steps", 0, "variants"]),
        (
            {
                "variants": [
                    variant("A"),
                    variant("B"),
                    {"name": "h", "holdout": True, "weight": 1},
                    {"name": "i", "holdout": True, "weight": 1},
                ]
            },
            ["body", "steps", 0, "variants"],
        ),  # fmt: skip
        ({"variants": [variant("A"), variant("A")]}, ["body", "steps", 0, "variants"]),
        (
            {"variants": [variant("A"), variant("B", weight=0)]},
            ["body", "steps", 0, "variants", 1, "weight"],
        ),
        (
            {"variants": [variant("A"), variant("B", weight=-1)]},
            ["body", "steps", 0, "variants", 1, "weight"],
        ),
        (
            {"variants": [variant("A"), variant("B", weight="1")]},
            ["body", "steps", 0, "variants", 1, "weight"],
        ),
        (
            {"variants": [variant("A"), variant("B", weight=True)]},
            ["body", "steps", 0, "variants", 1, "weight"],
        ),
        (
            {"variants": [variant("A"), variant("B", template_id=999_999)]},
            ["body", "steps", 0, "variants", 1, "template_id"],
        ),
        (
            {"variants": [variant("A"), {"name": "B", "weight": 1}]},
            ["body", "steps", 0, "variants", 1],
        ),
        (
            {"variants": [variant("A"), variant("B", holdout=True)]},
            ["body", "steps", 0, "variants", 1],
        ),
        ({"winner": {"metric": "open_rate", "after_hours": 24}}, ["body", "steps", 0, "winner"]),
        (
            {
                "variants": [variant("A"), variant("B")],
                "winner": {"metric": "bounce_rate", "after_hours": 24},
            },
            ["body", "steps", 0, "winner", "metric"],
        ),  # fmt: skip
        (
            {
                "variants": [variant("A"), variant("B")],
                "winner": {"metric": "open_rate", "after_hours": 0},
            },
            ["body", "steps", 0, "winner", "after_hours"],
        ),  # fmt: skip
    ]
    for extra, loc in cases:
        step = {"subject": "Hi", "delay_hours": 0, "template_id": template, **extra}
        response = await api.post("/api/campaigns", json={"name": "x", "steps": [step]})
        assert response.status_code == 422, (extra, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert loc in error_locs(response), (extra, response.json())


async def test_a_version_may_add_variants_validated_as_a_new_campaigns(
    api: httpx.AsyncClient,
) -> None:
    template = await make_template(api)
    campaign = await make_campaign(
        api, [{"subject": "Welcome", "delay_hours": 0, "template_id": template}]
    )
    cid, step_id = campaign["id"], campaign["steps"][0]["id"]
    draft = await api.post(f"/api/campaigns/{cid}/versions")
    assert draft.status_code == 201, draft.text
    number = draft.json()["version"]
    one = {"name": "A", "subject": "S", "template_id": template, "weight": 1}
    refused = await api.put(
        f"/api/campaigns/{cid}/versions/{number}",
        json={"steps": [{**split(template), "id": step_id, "variants": [one]}]},
    )
    assert refused.status_code == 422
    assert error_locs(refused) == [["body", "steps", 0, "variants"]]
    edited = await api.put(
        f"/api/campaigns/{cid}/versions/{number}",
        json={"steps": [{**split(template), "id": step_id}]},
    )
    assert edited.status_code == 200, edited.text
    published = await api.post(
        f"/api/campaigns/{cid}/versions/{number}/publish", json={"policy": "stay"}
    )
    assert published.status_code == 200, published.text
    steps = (await api.get("/api/campaigns/steps", params={"campaign_id": cid})).json()
    assert steps[0]["id"] == step_id  # the same step, now split-tested
    assert [v["name"] for v in steps[0]["variants"]] == ["A", "B", "control"]
