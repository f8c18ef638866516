"""A/B variants on the pages, in a real browser (tests/api/ui/conftest.py) against the real dev
server, worker and API: the plan shows a step's variants (their shares, the holdout) and its
winner rule; the per-variant numbers (assigned, sent, delivered, opened, clicked, converted and
the rates) are GET /api/campaigns/{id}/funnel's; a journey page names the variant it was given."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from api.ui.render import percent
from tests.api.ui.conftest import watched_page
from tests.conftest import unique_domain
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]
COUNTS = ["assigned", "sent", "delivered", "opened", "clicked", "converted"]
RATES = ["open_rate", "click_rate", "conversion_rate"]


def variants_of_api(funnel: dict[str, Any]) -> dict[str, str]:
    shown = {}
    for step in funnel["steps"]:
        for v in step.get("variants") or []:
            for name in COUNTS:
                shown[f"{step['step_order']}:{v['name']}:{name}"] = str(v[name])
            for name in RATES:
                shown[f"{step['step_order']}:{v['name']}:{name}"] = percent(v[name])
    return shown


async def variants_on_page(page: Any) -> dict[str, str]:
    cells = await page.locator("[data-variant]").all()
    return {await c.get_attribute("data-variant"): await c.inner_text() for c in cells}


async def test_the_variants_on_the_pages_are_the_apis(
    browser: Any, system: httpx.AsyncClient
) -> None:
    api = system
    template = await make_template(api)
    steps = [
        {"subject": "Welcome", "delay_hours": 0, "template_id": template,
         "variants": [{"name": "A", "subject": "Welcome, from A", "template_id": template, "weight": 2},
                      {"name": "B", "subject": "Welcome, from B", "template_id": template, "weight": 1},
                      {"name": "H", "weight": 1, "holdout": True}],
         "winner": {"metric": "open_rate", "after_hours": 48}},
    ]  # fmt: skip
    campaign = await make_campaign(
        api, steps, goal={"event": "order.completed", "window_hours": 72}
    )
    cid, domain = campaign["id"], unique_domain()
    emails = [f"r{i}@{domain}" for i in range(8)]
    enrolled = await api.post(
        f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": e} for e in emails]}
    )
    assert enrolled.json()["enrolled"] == len(emails)

    async def all_decided() -> dict[str, Any] | None:
        funnel = (await api.get(f"/api/campaigns/{cid}/funnel")).json()
        drawn = funnel["steps"][0].get("variants") or []
        return funnel if sum(v["assigned"] for v in drawn) == len(emails) else None

    await eventually(all_decided, what="every journey given a variant")
    journeys = {e: (await api.get(f"/api/campaigns/{cid}/recipients/{e}")).json() for e in emails}
    sent = {e: j["steps"][0] for e, j in journeys.items() if j["steps"][0]["variant"] != "H"}
    opener = next(iter(sent))
    opened = await api.post(
        "/api/events",
        json={
            "delivery_id": sent[opener]["delivery_id"],
            "type": "open",
            "event_id": f"o-{domain}",
        },
    )
    assert opened.status_code == 202
    buyer = next(iter(set(emails) - {opener}))
    bought = await api.post("/api/track", json={"email": buyer, "event": "order.completed"})
    assert bought.status_code == 202

    async def settled() -> dict[str, Any] | None:
        funnel = (await api.get(f"/api/campaigns/{cid}/funnel")).json()
        drawn = funnel["steps"][0]["variants"]
        done = sum(v["opened"] for v in drawn) == 1 and sum(v["converted"] for v in drawn) == 1
        return funnel if done else None

    funnel = await eventually(settled, what="the open and the conversion counted")

    context, watched = await watched_page(browser, str(api.base_url).rstrip("/"))
    page = watched.page
    try:
        await page.goto(f"/ui/campaigns/{cid}")
        await page.locator("table.variants").wait_for()
        assert await variants_on_page(page) == variants_of_api(funnel)
        assert len(await variants_on_page(page)) == 3 * (len(COUNTS) + len(RATES))
        plan = page.locator("#step-1")
        assert (
            "50.0 % of journeys (weight 2)"
            in await plan.locator('[data-plan-variant="1:A"]').inner_text()
        )
        assert (
            "a holdout, sent nothing"
            in await plan.locator('[data-plan-variant="1:H"]').inner_text()
        )
        winner = await plan.locator('[data-plan-winner="1"]').inner_text()
        assert "the best open rate 2 days after the step's first send" in winner, winner
        assert "Not chosen yet." in winner
        await watched.shot("campaign-variants")

        # The journey page names the variant the API says this journey was given.
        given = journeys[opener]["steps"][0]["variant"]
        assert given in ("A", "B")
        await page.goto(f"/ui/campaigns/{cid}/recipients/{opener}")
        shown = page.locator('[data-step-variant="1"]')
        assert await shown.inner_text() == given
        assert await page.locator('[data-journey="variant"]').inner_text() == f"{given} at step 1"
        await watched.shot("journey-variant")

        # The buyer's page shows the conversion the API attributes.
        conversion = (await api.get(f"/api/campaigns/{cid}/recipients/{buyer}")).json()[
            "conversion"
        ]
        await page.goto(f"/ui/campaigns/{cid}/recipients/{buyer}")
        converted = await page.locator('[data-journey="conversion"]').inner_text()
        order = conversion["step_order"]  # none for a holdout's buyer: nothing was sent
        assert (f"after step {order}" if order else "before any message") in converted, converted
        assert f"(event {conversion['event_id']})" in converted, converted
        watched.clean()
    finally:
        await context.close()
