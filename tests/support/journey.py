"""Reading one journey through the API, and waiting for its end."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from tests.support.eventually import eventually


async def journey(api: httpx.AsyncClient, campaign_id: int, email: str) -> dict[str, Any]:
    response = await api.get(f"/api/campaigns/{campaign_id}/recipients/{email}")
    assert response.status_code == 200, response.text
    return response.json()


async def ended(
    api: httpx.AsyncClient, campaign_id: int, email: str, timeout: float = 30.0
) -> dict[str, Any]:
    """The journey once its end is recorded in the database."""

    async def check() -> dict[str, Any] | None:
        view = await journey(api, campaign_id, email)
        return view if view["finished_at"] else None

    return await eventually(
        check, f"the journey of {email} in campaign {campaign_id} to end", timeout
    )


def ended_by_signal(view: dict[str, Any], next_step_after: float) -> None:
    """Assert a journey ended well before its next step was due: so by a signal, not by the
    send activity's own check when that step came up. (Spec times have whole seconds.)"""
    sent = datetime.fromisoformat(view["steps"][0]["sent_at"])
    finished = datetime.fromisoformat(view["finished_at"])
    assert (finished - sent).total_seconds() < next_step_after - 4, view
