"""The webhook subscriptions settings page in a real browser (tests/api/ui/conftest.py) against
the real API: the list is GET /api/webhook-subscriptions's, a subscription created from the page
shows its secret once (the API's, which signs: never shown again on a reload), a refused URL is
said next to its field, and delete removes it from the API."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from settings import Settings
from tests.api.ui.conftest import watched_page
from tests.conftest import serve_api

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]
HOOKS = "/api/webhook-subscriptions"


async def test_subscriptions_are_listed_created_once_and_deleted_as_the_api_says(
    browser: Any, settings: Settings, dev_env: WorkflowEnvironment
) -> None:
    local = settings.model_copy(update={"webhook_allow_private": True})
    async with serve_api(local, dev_env.client) as api:
        made = await api.post(
            HOOKS, json={"url": "http://127.0.0.1:9/crm", "events": ["step.sent"]}
        )
        assert made.status_code == 201, made.text
        # Without the form's CSRF token, neither a new one nor a delete is made.
        forged = await api.post(
            "/ui/settings/webhooks", data={"url": "http://127.0.0.1:9/x", "events": "step.sent"}
        )
        assert forged.status_code == 403
        gone = await api.post(f"/ui/settings/webhooks/{made.json()['id']}/delete")
        assert gone.status_code == 403
        assert len((await api.get(HOOKS)).json()["items"]) == 1
        context, watched = await watched_page(browser, str(api.base_url).rstrip("/"))
        page = watched.page
        try:
            await page.goto("/ui/")
            await page.get_by_role("link", name="Webhooks").click()
            first = page.locator(f'[data-subscription="{made.json()["id"]}"]')
            assert "http://127.0.0.1:9/crm" in await first.inner_text()
            assert "step.sent" in await first.inner_text()

            await page.get_by_label("URL", exact=True).fill("http://127.0.0.1:9/hooks/drip")
            await page.get_by_label("journey.converted").check()
            await page.get_by_label("step.skipped").check()
            await page.get_by_label("Description (optional)").fill("CRM sync")
            await page.get_by_role("button", name="Subscribe").click()
            secret = await page.locator("[data-secret]").inner_text()
            listed = (await api.get(HOOKS)).json()["items"]
            assert len(listed) == 2
            new = listed[1]
            assert new["url"] == "http://127.0.0.1:9/hooks/drip"
            assert sorted(new["events"]) == ["journey.converted", "step.skipped"]
            assert new["description"] == "CRM sync"
            assert secret.startswith("whsec_") and len(secret) > 20, secret
            await watched.shot("webhooks")
            await page.goto("/ui/settings/webhooks")  # shown once: not on the next visit
            assert await page.locator("[data-secret]").count() == 0
            assert secret not in await page.content()
            rows = await page.locator("[data-subscription]").all()
            assert [await r.get_attribute("data-subscription") for r in rows] == [
                str(s["id"]) for s in listed
            ]

            # No event chosen: refused, next to the events it needs.
            watched.expected.add("/ui/settings/webhooks")
            await page.get_by_label("URL", exact=True).fill("http://127.0.0.1:9/other")
            await page.get_by_role("button", name="Subscribe").click()
            await page.locator("#webhook_events-error").wait_for()
            assert "events" in await page.locator("#webhook_events-error").inner_text()
            assert (
                await page.get_by_label("URL", exact=True).input_value()
                == "http://127.0.0.1:9/other"
            )
            assert len((await api.get(HOOKS)).json()["items"]) == 2
            assert all("422" in p for p in watched.problems), watched.problems
            watched.problems.clear()
            watched.expected.clear()

            row = page.locator(f'[data-subscription="{new["id"]}"]')
            await row.get_by_text("Delete…").click()
            await row.get_by_role("button", name=f"Yes, delete subscription {new['id']}").click()
            await page.get_by_role("heading", name="Webhook subscriptions").wait_for()
            assert await page.locator(f'[data-subscription="{new["id"]}"]').count() == 0
            assert (await api.get(f"{HOOKS}/{new['id']}")).status_code == 404
            assert [s["id"] for s in (await api.get(HOOKS)).json()["items"]] == [made.json()["id"]]
            watched.clean()
        finally:
            await context.close()
