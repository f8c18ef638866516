"""A real browser for the dashboard tests: Debian's chromium driven by Playwright (never a
browser download). Without /usr/bin/chromium these tests skip, unless DRIP_REQUIRE_BROWSER=1
(.ci/run sets it): then they fail. Each page visited is watched for console errors, page errors
and failed requests, and saved as a screenshot under var/test-artifacts/dashboard/."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("DRIP_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[3] / "var" / "test-artifacts" / "dashboard"
WIDTHS = {"wide": 1280, "phone": 390}


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    if not CHROMIUM.exists():  # noqa: ASYNC240 (once per session, before anything runs)
        message = f"no browser at {CHROMIUM} (apt-get install chromium chromium-driver)"
        if os.environ.get("DRIP_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{message}, and DRIP_REQUIRE_BROWSER=1: the browser tests must run")
        pytest.skip(message)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        print(f"\ndashboard screenshots: {ARTIFACTS}")  # noqa: T201
        yield browser
        await browser.close()


@dataclass
class Watched:
    """A page and everything that went wrong on it since the last `clean()`."""

    page: Any
    problems: list[str] = field(default_factory=list)
    expected: set[str] = field(default_factory=set)  # URL parts allowed to answer 4xx

    def clean(self) -> None:
        found, self.problems[:] = list(self.problems), []
        assert not found, f"the page had console errors or failed requests: {found}"

    async def shot(self, name: str) -> None:
        """A screenshot at each width (full page), the page clean at both."""
        for label, width in WIDTHS.items():
            await self.page.set_viewport_size({"width": width, "height": 900})
            await self.page.screenshot(path=ARTIFACTS / f"{name}-{label}.png", full_page=True)
        await self.page.set_viewport_size({"width": WIDTHS["wide"], "height": 900})
        self.clean()


async def watched_page(browser: Any, base_url: str) -> tuple[Any, Watched]:
    context = await browser.new_context(
        base_url=base_url, viewport={"width": WIDTHS["wide"], "height": 900}
    )
    page = await context.new_page()
    watched = Watched(page)

    def on_console(message: Any) -> None:
        if message.type == "error":
            watched.problems.append(f"console: {message.text}")

    def on_response(response: Any) -> None:
        if response.status >= 400 and not any(e in response.url for e in watched.expected):
            watched.problems.append(f"{response.status} {response.request.method} {response.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.problems.append(f"page error: {error}"))

    def on_failed(request: Any) -> None:
        # A poll cut short by leaving the page is not a failure; anything else is.
        aborted = "ERR_ABORTED" in (request.failure or "")
        if not (aborted and request.resource_type in ("xhr", "fetch")):
            watched.problems.append(f"failed: {request.method} {request.url} {request.failure}")

    page.on("requestfailed", on_failed)
    page.on("response", on_response)
    return context, watched
