"""Enrolling through the API."""

from __future__ import annotations

from typing import Any

import httpx


async def enroll(api: httpx.AsyncClient, campaign_id: int, *emails: str) -> dict[str, Any]:
    response = await api.post(
        f"/api/campaigns/{campaign_id}/recipients",
        json={"recipients": [{"email": e, "fields": {"first_name": "Jo"}} for e in emails]},
    )
    assert response.status_code == 200, response.text
    return response.json()
