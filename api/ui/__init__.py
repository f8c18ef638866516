"""The dashboard at /ui/: server-rendered pages (Jinja2) with a little htmx, served by the API's
own process from the same route functions and services, every asset shipped in this package."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import PlainTextResponse, Response

from api.ui import actions, pages
from api.ui.render import redirect
from api.ui.session import CsrfRefused, LoginRequired, viewer_of

STATIC = Path(__file__).parent / "static"


async def _to_login(request: Request, _exc: Exception) -> Response:
    if request.headers.get("hx-request") == "true":
        # A poll from a page whose session has ended: the whole page goes to the sign-in,
        # rather than the sign-in form being swapped into one part of it.
        referer = urlsplit(request.headers.get("referer", "")).path or "/ui/"
        target = f"/ui/login?next={quote(referer, safe='/')}"
        return PlainTextResponse("sign in again", status_code=401, headers={"HX-Redirect": target})
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return redirect(request, viewer_of(request), f"/ui/login?next={quote(target, safe='/')}")


async def _csrf_refused(_request: Request, _exc: Exception) -> Response:
    return PlainTextResponse(
        "Refused: this form has no valid CSRF token. Reload the page and send it again.",
        status_code=403,
    )


def install(app: FastAPI) -> None:
    app.include_router(actions.router)
    app.include_router(pages.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    app.add_exception_handler(LoginRequired, _to_login)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
