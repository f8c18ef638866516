"""Templates are bounded at save time too: a template (HTML, text) or step subject that overruns
the render budget even without fields is a 422 naming the field, answered at once; one that
overruns it only for some fields is bounded when it renders (preview: a 422, not a hung worker)."""

from __future__ import annotations

import time

import httpx

from tests.support.factories import error_locs, make_template

NESTED = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
FIELD_DRIVEN = "{% for i in range(n|int) %}{% for j in range(n|int) %}.{% endfor %}{% endfor %}"


async def test_costly_templates_and_subjects_are_refused_at_save(api: httpx.AsyncClient) -> None:
    started = time.monotonic()
    for body, loc in (
        ({"name": "t", "html": NESTED}, ["body", "html"]),
        ({"name": "t", "html": "<p>x</p>", "text": "{{ 'x' * 50000000 }}"}, ["body", "text"]),
    ):
        response = await api.post("/api/templates", json=body)
        assert response.status_code == 422, response.text
        assert error_locs(response) == [loc]
        assert "too costly to render" in response.json()["errors"][0]["msg"]
    template = await make_template(api)
    patched = await api.patch(f"/api/templates/{template}", json={"html": NESTED})
    assert patched.status_code == 422 and error_locs(patched) == [["body", "html"]]

    step = {"subject": NESTED, "delay_hours": 0, "template_id": template}
    campaign = await api.post("/api/campaigns", json={"name": "c", "steps": [step]})
    assert campaign.status_code == 422, campaign.text
    assert error_locs(campaign) == [["body", "steps", 0, "subject"]]
    assert "too costly to render" in campaign.text
    assert time.monotonic() - started < 15  # each refusal within the render deadline


async def test_a_preview_that_overruns_the_budget_is_a_422(api: httpx.AsyncClient) -> None:
    template = await make_template(api, html=FIELD_DRIVEN)  # fine without fields
    started = time.monotonic()
    preview = await api.post(f"/api/templates/{template}/preview", json={"fields": {"n": 100000}})
    assert preview.status_code == 422, preview.text
    assert "loop iterations" in preview.text or "longer than" in preview.text
    assert time.monotonic() - started < 10
    small = await api.post(f"/api/templates/{template}/preview", json={"fields": {"n": 3}})
    assert small.status_code == 200 and small.json()["html"] == "........."
