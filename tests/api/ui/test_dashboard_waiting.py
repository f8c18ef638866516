"""What a journey waits for, on its page in a real browser (tests/api/ui/conftest.py) against the
real dev server, worker and API: a delay, a date, a send window (with its zone), a wait-until
(with its condition), the frequency cap and a pause, each named in words with the API's sentence, and its `until`
in the viewer's local time with the UTC value on hover."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from api.ui.render import iso, shown_utc
from tests.api.ui.conftest import watched_page
from tests.conftest import unique_domain
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]
WORDS = {
    "delay": "A delay",
    "date": "A date",
    "send_window": "The send window",
    "wait_until": "A condition",
    "paused": "The campaign to resume",
    "frequency_cap": "The frequency cap",
}


async def test_every_kind_of_wait_is_said_in_words(browser: Any, system: httpx.AsyncClient) -> None:
    api = system
    template = await make_template(api)
    first = {"subject": "Hello", "delay_hours": 0, "template_id": template}
    later = datetime.now(UTC) + timedelta(days=3)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%a").lower()
    plans: dict[str, dict[str, Any]] = {
        "delay": {"steps": [first, {**first, "subject": "Later", "delay_hours": 24}]},
        "wait_until": {"steps": [first, {**first, "subject": "Opened?", "condition": {
            "type": "opened", "step_order": 1, "wait_hours": 48}}]},
        "date": {"steps": [{**first, "delay_until": {"field": "renews_at"}}]},
        "send_window": {"steps": [first], "send_window": {
            "days": [tomorrow], "start": "09:00", "end": "10:00", "timezone": "Asia/Tokyo"}},
        # step 2 falls due 3 s after step 1, into the pause: held
        "paused": {"steps": [first, {**first, "subject": "Soon", "delay_hours": 3 / 3600}]},
    }  # fmt: skip
    # One message per address a day: the second campaign's message to the delay journey's
    # address waits for the cap.
    capped = await api.put("/api/settings/frequency-cap", json={"max_messages": 1, "per_hours": 24})
    assert capped.status_code == 200, capped.text
    domain = unique_domain()
    where: dict[str, tuple[int, str]] = {}
    for kind, plan in plans.items():
        steps = plan.pop("steps")
        campaign = await make_campaign(api, steps, name=f"Waits: {kind}", **plan)
        email = f"{kind.replace('_', '-')}@{domain}"
        fields = {"renews_at": later.strftime("%Y-%m-%dT%H:%M:%SZ")}
        enrolled = await api.post(
            f"/api/campaigns/{campaign['id']}/recipients",
            json={"recipients": [{"email": email, "fields": fields}]},
        )
        assert enrolled.json()["enrolled"] == 1, enrolled.text
        where[kind] = (campaign["id"], email)

    async def waiting(kind: str) -> dict[str, Any] | None:
        cid, email = where[kind]
        journey = (await api.get(f"/api/campaigns/{cid}/recipients/{email}")).json()
        wait = journey.get("waiting_for")
        return wait if wait and wait["kind"] == kind else None

    async def first_sent(kind: str) -> bool:
        cid, email = where[kind]
        journey = (await api.get(f"/api/campaigns/{cid}/recipients/{email}")).json()
        return bool(journey["steps"])

    await eventually(lambda: first_sent("paused"), what="step 1 sent before the pause")
    await eventually(lambda: first_sent("delay"), what="step 1 sent before the capped one")
    _, delay_email = where["delay"]
    second = await make_campaign(api, [first], name="Waits: frequency_cap")
    enrolled = await api.post(
        f"/api/campaigns/{second['id']}/recipients", json={"recipients": [{"email": delay_email}]}
    )
    assert enrolled.json()["enrolled"] == 1, enrolled.text
    where["frequency_cap"] = (second["id"], delay_email)
    plans["frequency_cap"] = {}
    paused = await api.patch(f"/api/campaigns/{where['paused'][0]}", json={"status": "paused"})
    assert paused.status_code == 200, paused.text

    context, watched = await watched_page(browser, str(api.base_url).rstrip("/"))
    page = watched.page
    try:
        for kind in plans:
            wait = await eventually(lambda kind=kind: waiting(kind), what=f"a {kind} wait")
            cid, email = where[kind]
            await page.goto(f"/ui/campaigns/{cid}/recipients/{email}")
            shown = page.locator('[data-journey="waiting_for"]')
            text = await shown.inner_text()
            assert await shown.locator("[data-waiting-kind]").inner_text() == WORDS[kind]
            assert wait["reason"] in text, (kind, wait, text)
            if wait.get("condition"):
                assert f"({wait['condition']})" in text
            if wait.get("zone"):
                assert f"read in {wait['zone']}" in text
            if wait["until"]:
                until = shown.locator("time")
                assert await until.get_attribute("datetime") == iso(wait["until"])
                assert await until.get_attribute("title") == shown_utc(wait["until"])
                assert await until.inner_text() != shown_utc(wait["until"])  # local time
            if kind == "send_window":
                assert wait["zone"] == "Asia/Tokyo"
            if kind == "wait_until":
                assert wait["condition"], wait
            watched.clean()
        await watched.shot("journey-waiting")
    finally:
        await context.close()
