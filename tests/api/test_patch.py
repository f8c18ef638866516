"""Every PATCH: an omitted field keeps its value, `null` clears the fields that may be empty and
is a 422 naming the field on the required ones (it used to reach the database: `PATCH
/api/templates/{id}` with `{"name": null}` was a 500, NOT NULL constraint failed)."""

from __future__ import annotations

import httpx
import pytest

from tests.support.factories import error_locs, make_campaign, make_template

REQUIRED = {
    "template": ["name", "html"],
    "campaign": ["name", "status"],
    "step": ["subject", "delay_hours", "template_id"],
}
NULLABLE = {
    "template": ["text"],
    "campaign": ["from_email", "from_name", "reply_to"],
    "step": ["condition", "alternative"],
}


async def targets(api: httpx.AsyncClient) -> dict[str, str]:
    template = await make_template(api, text="Hi {{ first_name }}")
    campaign = await make_campaign(
        api,
        [{"subject": "One", "delay_hours": 1, "template_id": template}],
        activate=False,
        from_name="Acme",
    )
    return {
        "template": f"/api/templates/{template}",
        "campaign": f"/api/campaigns/{campaign['id']}",
        "step": f"/api/campaigns/steps/{campaign['steps'][0]['id']}",
    }


async def current(api: httpx.AsyncClient, kind: str, url: str) -> dict:
    if kind != "step":
        return (await api.get(url)).json()
    step_id = int(url.rsplit("/", 1)[1])
    campaigns = (await api.get("/api/campaigns")).json()
    for summary in campaigns:
        for step in (await api.get(f"/api/campaigns/{summary['id']}")).json()["steps"]:
            if step["id"] == step_id:
                return step
    raise AssertionError(step_id)


@pytest.mark.parametrize("kind", sorted(REQUIRED))
async def test_null_on_a_required_field_is_a_422_naming_it(
    api: httpx.AsyncClient, kind: str
) -> None:
    url = (await targets(api))[kind]
    before = await current(api, kind, url)
    for field in REQUIRED[kind]:
        response = await api.patch(url, json={field: None})
        assert response.status_code == 422, (field, response.text)
        assert error_locs(response) == [["body", field]]
        assert "cannot be null" in response.json()["errors"][0]["msg"]
    # Several at once: each named.
    response = await api.patch(url, json=dict.fromkeys(REQUIRED[kind]))
    assert sorted(map(tuple, error_locs(response))) == sorted(("body", f) for f in REQUIRED[kind])
    assert await current(api, kind, url) == before  # nothing changed


@pytest.mark.parametrize("kind", sorted(NULLABLE))
async def test_null_clears_a_field_that_may_be_empty_and_omitted_keeps_it(
    api: httpx.AsyncClient, kind: str
) -> None:
    url = (await targets(api))[kind]
    kept = await api.patch(url, json={})
    assert kept.status_code == 200, kept.text
    for field in NULLABLE[kind]:
        response = await api.patch(url, json={field: None})
        assert response.status_code == 200, (field, response.text)
        assert response.json().get(field) is None
    if kind == "template":
        assert (await api.get(url)).json()["text"] is None


async def test_the_schema_documents_required_patch_fields_as_not_nullable(
    api: httpx.AsyncClient,
) -> None:
    schemas = (await api.get("/openapi.json")).json()["components"]["schemas"]
    for model, kind in (
        ("TemplateUpdate", "template"),
        ("CampaignUpdate", "campaign"),
        ("StepUpdate", "step"),
    ):
        properties = schemas[model]["properties"]
        for field in REQUIRED[kind]:
            assert "anyOf" not in properties[field] and "null" not in str(properties[field])
        for field in NULLABLE[kind]:
            assert {"type": "null"} in properties[field]["anyOf"], (model, field)
