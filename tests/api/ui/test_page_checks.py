"""The checks the browser tests run on every page (tests/api/ui/conftest.py) can fail."""

from __future__ import annotations

from typing import Any

from tests.api.ui.conftest import ACCESSIBILITY_PROBLEMS


async def test_the_page_checks_find_what_they_look_for(browser: Any) -> None:
    """The accessibility probe every screenshot runs (conftest.py) is not a probe that always
    passes: an unlabelled field, faint text and a page wider than the phone are each caught."""
    page = await browser.new_page(viewport={"width": 390, "height": 600})
    try:
        await page.set_content(
            '<p style="color:#999">faint</p><p>fine</p><input id="x">'
            '<label for="y">Y</label><input id="y"><div style="width:900px">wide</div>'
        )
        problems = await page.evaluate(ACCESSIBILITY_PROBLEMS)
        assert [p.split(":")[0].split(" ")[0] for p in problems] == ["no", "contrast", "wider"]
        assert "faint" in problems[1] and 'id="x"' in problems[0]
    finally:
        await page.close()
