"""A rehearsal and the real thing agree: one scenario run live on the dev server (the real
worker, the API, an SMTP server) and rehearsed with the same events at the same times through
POST /api/campaigns/{id}/simulate, compared step by step — decision, subject, the condition's
verdict and when each step went out."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.conftest import unique_domain
from tests.support.enroll import enroll
from tests.support.factories import make_campaign, make_template
from tests.support.journey import ended, journey
from tests.system.test_journeys import messages
from tools.smtp_sink import SmtpSink

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

LINK = "https://app.example.com/upgrade"
DELIVERY = re.compile(rb"^X-Drip-Delivery: (\S+)\r$", re.MULTILINE)
GAP_HOURS = 0.002  # 7.2 s between steps


def _verdict(reason: str) -> str:
    """A reason without its evidence (event ids and times differ between the two runs), nor the
    journey view's note that it read a finished journey's reason from the database."""
    return reason.split(" — ")[0].split(" (from the database")[0]


def _delivery(message: Any) -> str:
    match = DELIVERY.search(message.content)
    assert match is not None
    return match.group(1).decode()


async def test_a_rehearsal_decides_and_times_every_step_as_the_live_journey_did(
    system: httpx.AsyncClient, smtp: SmtpSink
) -> None:
    api = system
    template = await make_template(api, f'<p>Hi</p><a href="{LINK}">Upgrade</a>')
    campaign = await make_campaign(
        api,
        [
            {"subject": "Welcome", "delay_hours": 0, "template_id": template},
            {"subject": "Tips", "delay_hours": GAP_HOURS, "template_id": template,
             "condition": {"type": "opened", "step_order": 1}},
            {"subject": "Still there?", "delay_hours": GAP_HOURS, "template_id": template,
             "condition": {"type": "not_clicked", "step_order": 2},
             "alternative": {"subject": "Thanks for clicking", "template_id": template}},
            {"subject": "Upgraded!", "delay_hours": GAP_HOURS, "template_id": template,
             "condition": {"type": "performed", "event": "upgraded"}},
        ],
    )  # fmt: skip
    cid, email = campaign["id"], f"sim@{unique_domain()}"

    # Live: open step 1, click step 2, track `upgraded` after step 3; each once its message is in.
    await enroll(api, cid, email)
    injected: list[tuple[float, dict[str, Any]]] = []  # (accepted at, the simulation's event)
    [first] = await messages(smtp, email, 1)
    answer = await api.post(
        "/api/events",
        json={"delivery_id": _delivery(first), "type": "open", "event_id": f"o-{email}"},
    )
    assert answer.status_code in (200, 202), answer.text
    injected.append((time.time(), {"type": "open", "step_order": 1}))
    second = (await messages(smtp, email, 2))[1]
    answer = await api.post(
        "/api/events",
        json={"delivery_id": _delivery(second), "type": "click", "url": LINK,
              "event_id": f"c-{email}"},
    )  # fmt: skip
    assert answer.status_code in (200, 202), answer.text
    injected.append((time.time(), {"type": "click", "step_order": 2, "url": LINK}))
    await messages(smtp, email, 3)
    answer = await api.post("/api/track", json={"email": email, "event": "upgraded"})
    assert answer.status_code == 202, answer.text
    injected.append((time.time(), {"type": "track", "event": "upgraded"}))
    live = await ended(api, cid, email, timeout=60)
    assert len(smtp.raw_to(email)) == 4

    # Rehearsed: the same events, as long after the start as they were accepted live.
    start = datetime.fromisoformat(live["enrolled_at"]).timestamp()
    events = [{**e, "after_hours": (at - start) / 3600} for at, e in injected]
    answer = await api.post(
        f"/api/campaigns/{cid}/simulate", json={"email": email, "events": events}
    )
    assert answer.status_code == 200, answer.text
    rehearsal = answer.json()

    assert rehearsal["status"] == live["status"] == "completed"
    steps = await api.get("/api/campaigns/steps", params={"campaign_id": cid})
    subjects = {s["step_order"]: s for s in steps.json()}
    live_steps = [
        (s["step_order"], s["decision"],
         subjects[s["step_order"]]["alternative"]["subject"] if s["decision"] == "alternative"
         else subjects[s["step_order"]]["subject"],
         _verdict(s["reason"]))
        for s in live["steps"]
    ]  # fmt: skip
    rehearsed = [
        (e["step_order"], e["decision"], e["subject"], _verdict(e["reason"]))
        for e in rehearsal["timeline"]
    ]
    assert rehearsed == live_steps
    assert [d for _, d, _, _ in rehearsed] == ["sent", "sent", "alternative", "sent"]
    # When each step went out, from each run's start: the same plan (live, within the worker's
    # own latency; the spec's times have whole seconds).
    live_offsets = [
        datetime.fromisoformat(s["decided_at"]).timestamp() - start for s in live["steps"]
    ]
    sim_start = datetime.fromisoformat(rehearsal["timeline"][0]["at"]).timestamp()
    sim_offsets = [
        datetime.fromisoformat(e["at"]).timestamp() - sim_start for e in rehearsal["timeline"]
    ]
    assert sim_offsets == pytest.approx([0, 7.2, 14.4, 21.6], abs=0.5)
    assert live_offsets == pytest.approx(sim_offsets, abs=3)
    # The rehearsal left the live journey as it was: one enrollment, four messages.
    assert (await journey(api, cid, email))["steps"] == live["steps"]
    assert len(smtp.raw_to(email)) == 4
