"""End to end on the dev server, with the real worker, API and SMTP server: a send window that
opens two minutes from now in the recipient's zone holds the message until then (and a
recipient whose zone is inside the window gets it at once); a frequency cap of one message per
24 h makes a second campaign's step skip (on_cap skip) or wait (defer) while the first
campaign's message is delivered, and a test send is never counted."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlmodel import Session, col, select

from settings import Settings
from storage.db import make_engine
from storage.models import CapSlot, Delivery
from tests.conftest import unique_domain
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template
from tests.support.journey import ended, journey
from tools.smtp_sink import SmtpSink

TOKYO, BRISBANE = ZoneInfo("Asia/Tokyo"), ZoneInfo("Australia/Brisbane")  # UTC+9, UTC+10
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


async def waiting_for(api: httpx.AsyncClient, campaign_id: int, email: str, kind: str) -> Any:
    async def check() -> Any:
        waiting = (await journey(api, campaign_id, email))["waiting_for"]
        return waiting if waiting and waiting["kind"] == kind else None

    return await eventually(check, f"{email} waiting for {kind}", 30)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_window_opening_in_two_minutes_holds_the_message_until_then(
    system: httpx.AsyncClient, smtp: SmtpSink
) -> None:
    api = system
    # The window opens at the whole minute 90-150 s from now, Tokyo time, for three hours.
    opening = (datetime.now(UTC) + timedelta(seconds=150)).replace(second=0, microsecond=0)
    start = opening.astimezone(TOKYO)
    window = {
        "days": EVERY_DAY,
        "start": start.strftime("%H:%M"),
        "end": (start + timedelta(hours=3)).strftime("%H:%M"),
        "timezone": "recipient",
        "fallback_timezone": "Asia/Tokyo",
    }
    template = await make_template(api)
    campaign = await make_campaign(
        api,
        [{"subject": "Good morning", "delay_hours": 0, "template_id": template}],
        send_window=window,
    )
    cid, domain = campaign["id"], unique_domain()
    tokyo, brisbane = f"tokyo@{domain}", f"brisbane@{domain}"
    enrolled = await api.post(
        f"/api/campaigns/{cid}/recipients",
        json={"recipients": [
            {"email": tokyo, "fields": {"timezone": "Asia/Tokyo"}},
            # an hour later on the clock: 58+ minutes into the window already
            {"email": brisbane, "fields": {"timezone": "Australia/Brisbane"}},
        ]},
    )  # fmt: skip
    assert enrolled.json()["enrolled"] == 2, enrolled.text
    accepted = time.time()

    async def arrived(address: str) -> bool:
        return bool(smtp.raw_to(address))

    await eventually(lambda: arrived(brisbane), "the message inside its window", 30)
    [at_once] = smtp.raw_to(brisbane)
    assert at_once.at - accepted < 20
    assert b"Subject: Good morning" in at_once.content

    held = await waiting_for(api, cid, tokyo, "send_window")
    assert held["zone"] == "Asia/Tokyo"
    assert datetime.fromisoformat(held["until"].replace("Z", "+00:00")) == opening
    assert smtp.raw_to(tokyo) == []

    wait = opening.timestamp() - time.time() + 45
    await eventually(lambda: arrived(tokyo), "the message at the window's opening", wait)
    [later] = smtp.raw_to(tokyo)
    assert opening.timestamp() - 1 <= later.at < opening.timestamp() + 20, (
        f"sent {later.at - opening.timestamp():.1f} s after the opening"
    )
    assert b"Subject: Good morning" in later.content
    done = await ended(api, cid, tokyo)
    assert done["status"] == "completed"


async def test_a_cap_of_one_a_day_skips_or_defers_the_second_campaigns_step(
    system: httpx.AsyncClient, smtp: SmtpSink, settings: Settings
) -> None:
    api = system
    cap = await api.put("/api/settings/frequency-cap", json={"max_messages": 1, "per_hours": 24})
    assert cap.status_code == 200, cap.text
    template = await make_template(api)
    address = f"maya@{unique_domain()}"

    def one_step(subject: str, **campaign: Any) -> list[dict[str, Any]]:
        return [{"subject": subject, "delay_hours": 0, "template_id": template}]

    first = await make_campaign(api, one_step("First campaign"))
    await api.post(f"/api/campaigns/{first['id']}/recipients",
                   json={"recipients": [{"email": address}]})  # fmt: skip
    assert (await ended(api, first["id"], address))["status"] == "completed"
    [delivered] = smtp.raw_to(address)
    assert b"Subject: First campaign" in delivered.content

    # a test send goes out and is not counted
    trial = await api.post(f"/api/campaigns/{first['id']}/test-send", json={"email": address})
    assert trial.status_code == 200, trial.text

    skipping = await make_campaign(api, one_step("Skipped by the cap"), on_cap="skip")
    deferring = await make_campaign(api, one_step("Deferred by the cap"), on_cap="defer")
    exempt = await make_campaign(api, one_step("Your receipt"), frequency_cap="exempt")
    for campaign in (skipping, deferring, exempt):
        response = await api.post(f"/api/campaigns/{campaign['id']}/recipients",
                                  json={"recipients": [{"email": address}]})  # fmt: skip
        assert response.json()["enrolled"] == 1, response.text

    skipped = await ended(api, skipping["id"], address)
    assert skipped["status"] == "completed"
    [step] = skipped["steps"]
    assert step["decision"] == "skipped"
    assert step["reason"].startswith("skipped: frequency_cap (1 of 1 messages in 24 h")

    waiting = await waiting_for(api, deferring["id"], address, "frequency_cap")
    frees = datetime.fromisoformat(waiting["until"].replace("Z", "+00:00"))
    assert timedelta(hours=23, minutes=58) < frees - datetime.now(UTC) <= timedelta(hours=24)

    assert (await ended(api, exempt["id"], address))["status"] == "completed"
    subjects = [
        r.content.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0] for r in smtp.raw_to(address)
    ]
    assert sorted(subjects) == sorted([b"First campaign", b"[Test] First campaign",
                                       b"Your receipt"]), subjects  # fmt: skip

    funnel = (await api.get(f"/api/campaigns/{skipping['id']}/funnel")).json()
    assert (funnel["steps"][0]["skipped_by_cap"], funnel["steps"][0]["skipped"]) == (1, 1)
    funnel = (await api.get(f"/api/campaigns/{deferring['id']}/funnel")).json()
    assert funnel["steps"][0]["deferred_by_cap"] == 1 and funnel["steps"][0]["sent"] == 0

    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            slots = session.exec(select(CapSlot).where(col(CapSlot.email) == address)).all()
            sent = session.exec(
                select(Delivery).where(col(Delivery.campaign_id) == first["id"])
            ).one()
    finally:
        engine.dispose()
    assert len(slots) == 1, "only the first campaign's message counts: not the test nor the exempt"
    assert slots[0].reserved_at == sent.sent_at, "counted from the message's actual send"
