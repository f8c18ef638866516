"""Reading what the real SMTP sink received, and waiting (bounded) for the system to act."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from email.message import EmailMessage
from typing import Any, TypeVar

import httpx

from tests.smtp import SmtpSink

T = TypeVar("T")

BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
LINKS_HTML = (
    "<html><body><p>Hi {{ first_name | default('there') }}</p>"
    '<p><a href="https://shop.example/one">One</a> '
    '<a href="https://shop.example/two?a=1&amp;b=2">Two</a></p></body></html>'
)
ORIGINAL_LINKS = ["https://shop.example/one", "https://shop.example/two?a=1&b=2"]


async def eventually(
    check: Callable[[], Awaitable[T | None]], what: str, timeout: float = 30.0
) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def received(
    smtp: SmtpSink, address: str, count: int, timeout: float = 30.0
) -> list[EmailMessage]:
    async def check() -> list[EmailMessage] | None:
        got = smtp.to(address)
        return got if len(got) >= count else None

    return await eventually(check, f"{count} message(s) to {address}", timeout)


def html_of(message: EmailMessage) -> str:
    return message.get_body(("html",)).get_content()  # type: ignore[union-attr]


def text_of(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def hrefs(html: str) -> list[str]:
    return re.findall(r"""<a\b[^>]*\bhref=["']([^"']+)["']""", html)


def pixel_url(html: str) -> str:
    [src] = re.findall(r"""<img\b[^>]*\bsrc=["']([^"']+/t/o/[^"']+)["']""", html)
    return src


def unsubscribe_url(message: EmailMessage) -> str:
    match = re.search(r"<(https?://[^>]+)>", str(message["List-Unsubscribe"]))
    assert match, message["List-Unsubscribe"]
    return match.group(1)


def path_of(url: str, base: str) -> str:
    assert url.startswith(base + "/"), (url, base)
    return url[len(base) :]


async def events_of(api: httpx.AsyncClient, delivery_id: str) -> list[dict[str, Any]]:
    response = await api.get("/api/events", params={"delivery_id": delivery_id})
    assert response.status_code == 200, response.text
    return list(reversed(response.json()))  # oldest first


async def journey(api: httpx.AsyncClient, campaign_id: int, email: str) -> dict[str, Any]:
    response = await api.get(f"/api/campaigns/{campaign_id}/recipients/{email}")
    assert response.status_code == 200, response.text
    return response.json()


async def ended(
    api: httpx.AsyncClient, campaign_id: int, email: str, timeout: float = 30.0
) -> dict[str, Any]:
    """The journey once its end is recorded in the database."""

    async def check() -> dict[str, Any] | None:
        view = await journey(api, campaign_id, email)
        return view if view["finished_at"] else None

    return await eventually(
        check, f"the journey of {email} in campaign {campaign_id} to end", timeout
    )


def ended_by_signal(view: dict[str, Any], next_step_after: float) -> None:
    """Assert a journey ended well before its next step was due: so by a signal, not by the
    send activity's own check when that step came up. (Spec times have whole seconds.)"""
    sent = datetime.fromisoformat(view["steps"][0]["sent_at"])
    finished = datetime.fromisoformat(view["finished_at"])
    assert (finished - sent).total_seconds() < next_step_after - 4, view


async def enroll(api: httpx.AsyncClient, campaign_id: int, *emails: str) -> dict[str, Any]:
    response = await api.post(
        f"/api/campaigns/{campaign_id}/recipients",
        json={"recipients": [{"email": e, "fields": {"first_name": "Jo"}} for e in emails]},
    )
    assert response.status_code == 200, response.text
    return response.json()
