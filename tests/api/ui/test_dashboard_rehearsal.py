"""The campaign page's simulation form in a real browser (tests/api/ui/conftest.py) against the
real API and worker: the timeline it shows is POST /api/campaigns/{id}/simulate's answer for the
same input (when, step, decision, variant, subject, reason), in the viewer's local time with the
UTC value on hover; a refused event is named in words next to its row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api.ui.conftest import watched_page
from tests.support.factories import make_campaign, make_template

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


async def timeline_on_page(page: Any) -> list[dict[str, Any]]:
    shown = []
    for row in await page.locator("table.simulated tbody tr").all():
        at = row.locator('[data-sim="at"] time')
        entry: dict[str, Any] = {"at": await at.get_attribute("datetime")}
        entry["hover"] = await at.get_attribute("title")
        for name in ("step_order", "decision", "variant", "subject", "reason"):
            entry[name] = await row.locator(f'[data-sim="{name}"]').inner_text()
        shown.append(entry)
    return shown


def timeline_of_api(answer: dict[str, Any]) -> list[dict[str, Any]]:
    expected = []
    for e in answer["timeline"]:
        at = datetime.fromisoformat(e["at"]).astimezone(UTC)
        expected.append(
            {
                "at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "hover": at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                "step_order": str(e["step_order"]),
                "decision": e["decision"],
                "variant": e["variant"] or "",
                "subject": e["subject"],
                "reason": e["reason"] or "",
            }
        )
    return expected


async def test_the_rehearsal_on_the_page_is_the_apis(
    browser: Any, system: httpx.AsyncClient
) -> None:
    api = system
    template = await make_template(api)
    steps = [
        {"subject": "Welcome", "delay_hours": 0, "template_id": template,
         "variants": [{"name": "A", "subject": "Welcome A", "template_id": template, "weight": 1},
                      {"name": "B", "subject": "Welcome B", "template_id": template, "weight": 1}]},
        {"subject": "Tips", "delay_hours": 24, "template_id": template,
         "condition": {"type": "not_opened", "step_order": 1},
         "alternative": {"subject": "More tips", "template_id": template}},
        {"subject": "Upgrade", "delay_hours": 48, "template_id": template,
         "condition": {"type": "performed", "event": "trial.started", "wait_hours": 24}},
    ]  # fmt: skip
    campaign = await make_campaign(api, steps, activate=False)
    cid = campaign["id"]
    start = (datetime.now(UTC) + timedelta(days=1)).replace(second=0, microsecond=0)
    body = {
        "fields": {"timezone": "Europe/Paris"},
        "start_at": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "events": [
            {"after_hours": 2, "type": "open", "step_order": 1},
            {"after_hours": 50, "type": "track", "event": "trial.started"},
        ],
    }
    answer = await api.post(f"/api/campaigns/{cid}/simulate", json=body)
    assert answer.status_code == 200, answer.text
    expected = timeline_of_api(answer.json())
    assert [e["decision"] for e in expected] == ["sent", "alternative", "sent"], expected

    context, watched = await watched_page(browser, str(api.base_url).rstrip("/"))
    page = watched.page
    try:
        await page.goto(f"/ui/campaigns/{cid}")
        form = page.locator("#simulate form")
        await form.get_by_label("After (hours)").nth(0).fill("2")
        await form.get_by_label("They").nth(0).select_option("open")
        await form.get_by_label("Step").nth(0).select_option("1")
        await form.get_by_label("After (hours)").nth(1).fill("50")
        await form.get_by_label("They").nth(1).select_option("track")
        await form.get_by_label("Link clicked or event name").nth(1).fill("trial.started")
        await form.get_by_label("Their time zone (optional)").fill("Europe/Paris")
        await form.get_by_label("Start at, UTC (empty: now)").fill(start.strftime("%Y-%m-%dT%H:%M"))
        await form.get_by_role("button", name="Rehearse").click()
        await page.locator("table.simulated").wait_for()
        assert await timeline_on_page(page) == expected
        # Shown in the viewer's own time (not the UTC text of the title).
        first = page.locator('table.simulated [data-sim="at"] time').first
        assert await first.inner_text() != await first.get_attribute("title")
        # The form keeps what was entered, so the next rehearsal changes one thing.
        assert await form.get_by_label("They").nth(1).input_value() == "track"
        await watched.shot("campaign-rehearsal")

        # A click without its step: refused, in words, next to that row.
        watched.expected.add("/simulate")
        await form.get_by_label("They").nth(2).select_option("click")
        await form.get_by_role("button", name="Rehearse").click()
        error = page.locator("#ev2-error")
        await error.wait_for()
        assert "step_order" in await error.inner_text()
        row = page.locator(".sim-events li").nth(2)
        assert await row.locator("#ev2-error").count() == 1
        assert await row.get_by_label("They").get_attribute("aria-invalid") == "true"
        assert await page.locator("table.simulated").count() == 0
        # The refusal is a 422 on purpose: its console line is the only problem.
        assert watched.problems and all("422" in p for p in watched.problems), watched.problems
        watched.problems.clear()
    finally:
        await context.close()
