"""Pages from Jinja2 templates (api/ui/templates/), autoescaped, with the filters they share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse, Response

from api.ui.session import CSRF_FIELD, Viewer, csrf_token, keep

env = Environment(
    loader=PackageLoader("api.ui", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

SECURITY_HEADERS = {
    # Every script, style and image is ours (api/ui/static/): nothing inline, nothing remote.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def utc(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def iso(value: datetime | str | None) -> str:
    moment = utc(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""


def shown_utc(value: datetime | str | None) -> str:
    moment = utc(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def hours(value: float) -> str:
    """A delay as people say it: 36 s, 15 min, 2 h, 3 days."""
    seconds = round(value * 3600)
    if seconds == 0:
        return "at once"
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if unit == 'day' and n > 1 else ''}"
    return f"{seconds} s" if seconds < 3600 else f"{value:g} h"


CONDITION_WORDS = {
    "opened": "opened",
    "not_opened": "did not open",
    "clicked": "clicked",
    "not_clicked": "did not click",
    "performed": "performed",
    "not_performed": "did not perform",
}


def condition_words(kind: str) -> str:
    """A condition's type as a sentence says it: `not_opened` -> "did not open"."""
    return CONDITION_WORDS.get(kind, kind.replace("_", " "))


env.filters.update(
    iso=iso, shown_utc=shown_utc, percent=percent, hours=hours, condition_words=condition_words
)


def render(
    request: Request,
    viewer: Viewer,
    template: str,
    status_code: int = 200,
    **context: Any,
) -> Response:
    settings = request.app.state.settings
    html = env.get_template(template).render(
        request=request,
        viewer=viewer,
        csrf_field=CSRF_FIELD,
        csrf_token=csrf_token(settings, viewer),
        keys_required=bool(settings.api_keys),
        **context,
    )
    response = HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
    return keep(request, response, viewer)


def redirect(request: Request, viewer: Viewer, url: str) -> Response:
    """After a form: see the result with a GET (a reload does not post twice)."""
    return keep(request, RedirectResponse(url, status_code=303), viewer)
