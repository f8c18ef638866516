"""POST /api/campaigns/{id}/simulate: a draft campaign and a draft version rehearsed on the
time-skipping server through the API, nothing sent or stored, bad requests refused naming the
field, and the first rehearsal after start-up in under 5 s (the server kept warm)."""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from settings import Settings
from storage.models import Delivery, Enrollment
from temporal_client import connect_temporal
from tests.conftest import serve_api
from tests.support.factories import error_locs, make_campaign, make_template


def _hours(start: str, at: str) -> float:
    delta = datetime.fromisoformat(at) - datetime.fromisoformat(start)
    return round(delta.total_seconds() / 3600, 1)


async def test_a_draft_campaign_and_a_draft_version_are_rehearsed_and_nothing_is_stored(
    settings: Settings, engine: Engine
) -> None:
    settings = settings.model_copy(update={"simulation_warm": True})
    client = await connect_temporal(settings)
    async with serve_api(settings, client) as api:
        template = await make_template(api)
        steps = [
            {"subject": "Welcome", "delay_hours": 0, "template_id": template},
            {"subject": "Tips", "delay_hours": 72, "template_id": template,
             "condition": {"type": "opened", "step_order": 1}},
            {"subject": "Last call", "delay_hours": 24 * 27, "template_id": template},
        ]  # fmt: skip
        draft = await make_campaign(api, steps, activate=False)
        url = f"/api/campaigns/{draft['id']}/simulate"
        began = time.monotonic()
        answer = await api.post(
            url, json={"events": [{"after_hours": 1, "type": "open", "step_order": 1}]}
        )
        first_call = time.monotonic() - began
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "completed"
        assert [(e["step_order"], e["decision"], e["subject"]) for e in body["timeline"]] == [
            (1, "sent", "Welcome"), (2, "sent", "Tips"), (3, "sent", "Last call"),
        ]  # fmt: skip
        start = body["timeline"][0]["at"]
        assert [_hours(start, e["at"]) for e in body["timeline"]] == [0, 72, 720]
        assert first_call < 5, first_call

        # Unopened, step 2 is skipped; the same request twice answers the same.
        twice = [(await api.post(url, json={})).json() for _ in range(2)]
        for body in twice:
            assert [e["decision"] for e in body["timeline"]] == ["sent", "skipped", "sent"]
        assert [e["reason"] for e in twice[0]["timeline"]] == [
            e["reason"] for e in twice[1]["timeline"]
        ]

        # A live campaign's draft version: its new step rehearsed before it is published.
        live = await make_campaign(api, steps[:1])
        base = f"/api/campaigns/{live['id']}/versions"
        assert (await api.post(base)).status_code == 201
        kept = (await api.get("/api/campaigns/steps", params={"campaign_id": live["id"]})).json()
        definition = {"steps": [{"id": kept[0]["id"], "subject": "Welcome", "delay_hours": 0,
                                 "template_id": template},
                                {"subject": "New", "delay_hours": 5, "template_id": template}]}  # fmt: skip
        assert (await api.put(f"{base}/2", json=definition)).status_code == 200, "draft"
        live_url = f"/api/campaigns/{live['id']}/simulate"
        on_live = (await api.post(live_url, json={})).json()
        on_draft = (await api.post(live_url, json={"version": 2})).json()
        assert [e["subject"] for e in on_live["timeline"]] == ["Welcome"]
        assert [e["subject"] for e in on_draft["timeline"]] == ["Welcome", "New"]

        # Refused, naming the field.
        for request, loc in [
            ({"events": [{"after_hours": -1, "type": "open", "step_order": 1}]},
             ["body", "events", 0, "after_hours"]),
            ({"events": [{"after_hours": 1, "type": "click", "step_order": 7}]},
             ["body", "events", 0, "step_order"]),
            ({"start_at": "2020-01-01T00:00:00Z"}, ["body", "start_at"]),
            ({"version": 9}, ["body", "version"]),
        ]:  # fmt: skip
            refused = await api.post(live_url, json=request)
            assert refused.status_code == 422, refused.text
            assert loc in error_locs(refused), refused.text
        assert (await api.post("/api/campaigns/999999/simulate", json={})).status_code == 404

    with Session(engine) as session:  # nothing enrolled, nothing sent
        assert session.exec(select(Enrollment)).first() is None
        assert session.exec(select(Delivery)).first() is None
    outbox = settings.var_dir / "outbox"
    assert not outbox.exists() or not any(outbox.iterdir())


@pytest.mark.parametrize("bad", [{"events": [{"type": "open"}]}, {"version": 0}])
async def test_a_malformed_request_is_a_422(api: httpx.AsyncClient, bad: dict[str, object]) -> None:
    template = await make_template(api)
    campaign = await make_campaign(
        api, [{"subject": "x", "delay_hours": 0, "template_id": template}]
    )
    refused = await api.post(f"/api/campaigns/{campaign['id']}/simulate", json=bad)
    assert refused.status_code == 422, refused.text
