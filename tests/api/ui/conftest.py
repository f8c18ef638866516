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
VIEWER_ZONE = "Asia/Kolkata"

# In the page: controls without a label, text under WCAG AA contrast (4.5:1; 3:1 for large
# text), and content wider than the viewport (a page must not scroll sideways; tables may,
# inside their own scroll box).
ACCESSIBILITY_PROBLEMS = """() => {
  const problems = [];
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
    if (!(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
      problems.push('no label: ' + el.outerHTML.slice(0, 80));
  }
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => {
      v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); })
    .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node; (node = walker.nextNode());) {
    const el = node.parentElement;
    if (!node.textContent.trim() || !el.getClientRects().length) continue;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || el.closest('.visually-hidden, .skip')) continue;
    const [a, b] = [lum(rgb(style.color).slice(0, 3)), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < needed)
      problems.push(`contrast ${ratio.toFixed(2)} < ${needed}: ${node.textContent.trim().slice(0, 40)}`);
  }
  if (document.documentElement.scrollWidth > window.innerWidth + 1)
    problems.push(`wider than the viewport: ${document.documentElement.scrollWidth} px`);
  return problems;
}"""


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
        """A screenshot at each width (full page), the page clean and accessible at both."""
        for label, width in WIDTHS.items():
            await self.page.set_viewport_size({"width": width, "height": 900})
            await self.page.screenshot(path=ARTIFACTS / f"{name}-{label}.png", full_page=True)
            found = await self.page.evaluate(ACCESSIBILITY_PROBLEMS)
            assert not found, f"{name} at {width} px: {found}"
        await self.page.set_viewport_size({"width": WIDTHS["wide"], "height": 900})
        self.clean()


async def watched_page(browser: Any, base_url: str) -> tuple[Any, Watched]:
    context = await browser.new_context(
        base_url=base_url,
        viewport={"width": WIDTHS["wide"], "height": 900},
        # A viewer far from UTC (+05:30), so local times differ from the UTC ones visibly.
        timezone_id=VIEWER_ZONE,
        locale="en-US",
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
