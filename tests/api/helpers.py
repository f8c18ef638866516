"""Small builders for API tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
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
    return [e["loc"] for e in response.json()["detail"]]


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 60, what: str = "condition"
) -> Any:
    """Poll an async check until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)


async def journey(api: httpx.AsyncClient, campaign_id: int, email: str) -> dict[str, Any]:
    response = await api.get(f"/api/campaigns/{campaign_id}/recipients/{email}")
    assert response.status_code == 200, response.text
    return response.json()
