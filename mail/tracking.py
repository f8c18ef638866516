"""Open pixel, click rewriting and the visible unsubscribe link, added to a rendered message."""

from __future__ import annotations

import html as htmllib
import re

from mail.tokens import Tokens

_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"'\s]+)\2""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def rewrite_links(
    html: str, delivery_id: str, tokens: Tokens, base_url: str
) -> tuple[str, list[str]]:
    """Point every http(s) link at our click redirect; return the HTML and the original URLs,
    which are stored with the delivery so the redirect target is looked up, never trusted."""
    links: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(3).startswith(base_url + "/"):
            return match.group(0)  # our own links (unsubscribe) are never wrapped
        links.append(htmllib.unescape(match.group(3)))
        token = tokens.click_token(delivery_id, len(links) - 1)
        return f"{match.group(1)}{match.group(2)}{base_url}/t/c/{token}{match.group(2)}"

    return _HREF.sub(replace, html), links


def add_open_pixel(html: str, delivery_id: str, tokens: Tokens, base_url: str) -> str:
    pixel = (
        f'<img src="{base_url}/t/o/{tokens.open_token(delivery_id)}.gif" width="1" height="1" '
        'alt="" style="display:block;border:0;width:1px;height:1px">'
    )
    return _insert_before_body_end(html, pixel)


def add_unsubscribe_footer(html: str, text: str, unsubscribe_url: str) -> tuple[str, str]:
    """A visible unsubscribe link, unless the template already shows `unsubscribe_url`."""
    if unsubscribe_url in html and unsubscribe_url in text:
        return html, text
    if unsubscribe_url not in html:
        footer = (
            '<p style="font-size:12px;color:#666">'
            f'<a href="{htmllib.escape(unsubscribe_url)}">Unsubscribe</a></p>'
        )
        html = _insert_before_body_end(html, footer)
    if unsubscribe_url not in text:
        text = f"{text.rstrip()}\n\n--\nUnsubscribe: {unsubscribe_url}\n"
    return html, text


def _insert_before_body_end(html: str, fragment: str) -> str:
    ends = list(_BODY_END.finditer(html))
    if not ends:
        return html + fragment
    at = ends[-1].start()
    return html[:at] + fragment + html[at:]
