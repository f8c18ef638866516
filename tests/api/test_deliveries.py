"""A message whose attempt ended past the point of no return (the server took the end of DATA
and never answered) is held as `uncertain` (DRIP_UNCERTAIN_SENDS=hold): not sent again, the
journey moves on, the journey view and the funnel show it, it is listed, and an operator can
resend it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from settings import Settings
from tests.conftest import free_port, unique_domain
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template
from tests.support.journey import journey
from tools.smtp_sink import SlowOnceSink, SmtpSink

SECOND = 1 / 3600


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SlowOnceSink(port=free_port(), delay=4)
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"smtp_timeout_seconds": 1.0})


async def test_uncertain_is_held_listed_counted_and_resent_by_an_operator(
    system: httpx.AsyncClient, smtp: SmtpSink
) -> None:
    api = system
    template = await make_template(api)
    steps = [{"subject": "one", "delay_hours": 0, "template_id": template},
             {"subject": "two", "delay_hours": 1 * SECOND, "template_id": template}]  # fmt: skip
    cid = (await make_campaign(api, steps))["id"]
    address = f"maybe@{unique_domain()}"
    await api.post(f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": address}]})

    async def completed() -> bool:
        return (await journey(api, cid, address))["status"] == "completed"

    await eventually(completed, timeout=60, what="the journey to move on past the uncertain step")
    state = await journey(api, cid, address)
    assert [s["delivery_status"] for s in state["steps"]] == ["uncertain", "sent"]
    assert sorted(str(m["Subject"]) for m in smtp.to(address)) == ["one", "two"]  # not resent
    funnel = (await api.get(f"/api/campaigns/{cid}/funnel")).json()
    assert [(s["sent"], s["uncertain"]) for s in funnel["steps"]] == [(0, 1), (1, 0)]

    listed = (await api.get("/api/deliveries", params={"status": "uncertain"})).json()
    mine = [d for d in listed["items"] if d["campaign_id"] == cid]
    assert [(d["email"], d["subject"], d["step_order"]) for d in mine] == [(address, "one", 1)]
    delivery_id = mine[0]["id"]

    resent = await api.post(f"/api/deliveries/{delivery_id}/resend")
    assert resent.status_code == 200, resent.text
    assert resent.json()["status"] == "sent"
    assert sorted(str(m["Subject"]) for m in smtp.to(address)) == ["one", "one", "two"]
    funnel = (await api.get(f"/api/campaigns/{cid}/funnel")).json()
    assert [(s["sent"], s["uncertain"]) for s in funnel["steps"]] == [(1, 0), (1, 0)]
    listed = await api.get("/api/deliveries", params={"status": "uncertain", "campaign_id": cid})
    assert listed.json()["items"] == []

    again = await api.post(f"/api/deliveries/{delivery_id}/resend")
    assert again.status_code == 409, again.text
    assert (await api.post("/api/deliveries/snd_nothing/resend")).status_code == 404
    missing = await api.get("/api/deliveries")
    assert missing.status_code == 422 and missing.json()["errors"][0]["loc"] == ["query", "status"]
