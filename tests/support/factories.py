"""Building what a test needs through the API: templates, campaigns."""

from __future__ import annotations

from typing import Any

import httpx


async def make_template(
    api: httpx.AsyncClient,
    html: str = "<p>Hi {{ first_name | default('there') }}</p>",
    **extra: Any,
) -> int:
    response = await api.post("/api/templates", json={"name": "t", "html": html, **extra})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def make_campaign(
    api: httpx.AsyncClient, steps: list[dict[str, Any]], activate: bool = True, **extra: Any
) -> dict[str, Any]:
    response = await api.post(
        "/api/campaigns", json={"name": "Onboarding", "steps": steps, **extra}
    )
    assert response.status_code == 201, response.text
    campaign = response.json()
    if activate:
        response = await api.patch(f"/api/campaigns/{campaign['id']}", json={"status": "active"})
        assert response.status_code == 200, response.text
        campaign = response.json()
    return campaign


def error_locs(response: httpx.Response) -> list[list[Any]]:
    return [e["loc"] for e in response.json()["errors"]]
