"""Reading what the real SMTP sink received."""

from __future__ import annotations

import re
from email.message import EmailMessage
from typing import Any

import httpx

from tests.support.eventually import eventually
from tools.smtp_sink import SmtpSink

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
