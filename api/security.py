"""Who may call what. Everything needs `Authorization: Bearer <key>` (one of DRIP_API_KEYS)
except an explicit allow-list of what is open by design (`OPEN_PREFIXES`, `OPEN_PATHS`): the
tracking and unsubscribe links (`/t/...`, `/u/...`, signed tokens), the provider webhooks
(exactly `/api/webhooks/...`, which verify the provider's signature), health, metrics and docs.

Fail closed: a path is protected unless it is listed, so a router added later, an unknown path or
a path spelled to dodge a prefix check is protected too. The path checked is the *routed* path
(the root path stripped exactly as the router strips it): under `uvicorn --root-path /drip` the
request `/drip/api/campaigns` routes to `/api/campaigns` and is checked as that. One ASGI
middleware refuses before a body is read; a router-level dependency (`API_KEY`, on every protected
router in api/main.py) checks again where the route runs, so neither alone is the door.

Without any key (local mode) the API is for this machine only:
- it refuses to start on a non-loopback DRIP_API_HOST (`check_bind`), and answers 403 to a
  request that reaches it on a non-loopback address anyway (uvicorn told `--host 0.0.0.0`);
- a protected request whose `Host` is not a loopback name or address is a 421: a web page cannot
  reach the API by pointing its own DNS name at 127.0.0.1 (DNS rebinding);
- a state-changing protected request from a browser on another site (`Origin` not this API's,
  or `Sec-Fetch-Site` other than same-origin/none) is a 403: a page cannot make the visitor's
  browser post to the local API (CSRF), e.g. a multipart CSV import."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request

# The router's own function: the auth check must see exactly the path routing sees.
from starlette._utils import get_route_path
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import problem
from settings import Settings, is_loopback

log = logging.getLogger(__name__)

SCHEME = "bearerAuth"

# Open by design (routed paths). Everything else needs a key.
OPEN_PREFIXES = ("/t/", "/u/", "/api/webhooks/")
OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
# The dashboard (api/ui/): its own signed session is its door, checked by every page and form
# (api/ui/session.py); keyless, the loopback-only rules below apply to it as to the API.
DASHBOARD_PREFIXES = ("/ui/",)
DASHBOARD_PATHS = frozenset({"/", "/ui", "/favicon.ico"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_SITE_FETCHES = frozenset({"same-origin", "none"})  # `none`: typed, bookmarked


class InsecureBindError(RuntimeError):
    pass


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def is_dashboard(path: str) -> bool:
    return path in DASHBOARD_PATHS or path.startswith(DASHBOARD_PREFIXES)


def check_bind(settings: Settings) -> None:
    """Refuse an API reachable from other machines without a key; warn about a keyless one."""
    if settings.api_keys:
        return
    if not is_loopback(settings.api_host):
        raise InsecureBindError(
            f"refusing to serve on {settings.api_host} without an API key: set DRIP_API_KEYS "
            "(comma-separated) or bind DRIP_API_HOST to 127.0.0.1"
        )
    log.warning("no DRIP_API_KEYS set: the API is open to anyone on this machine (loopback only)")


def on_network_address(scope: Scope) -> bool:
    """Did the request arrive on a non-loopback IP of this machine? (A unix socket path or an
    in-process test client's made-up host is not a network address.)"""
    host = (scope.get("server") or (None, None))[0]
    try:
        return not ipaddress.ip_address(str(host).strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str | None:
    """The name or address in a `Host` header, without its port (None when malformed)."""
    if any(c in host_header for c in "@/?#\\"):
        return None  # not a host[:port]: never let a parser pick a name out of it
    try:
        return urlsplit(f"//{host_header}").hostname
    except ValueError:
        return None


def cross_site(headers: dict[bytes, bytes]) -> bool:
    """Did a browser send this from a page of another origin?"""
    fetch_site = headers.get(b"sec-fetch-site")
    if fetch_site is not None and fetch_site.decode("latin-1").lower() not in SAME_SITE_FETCHES:
        return True
    origin = headers.get(b"origin")
    if origin is None:
        return False  # not a browser's cross-origin request (curl, the CLI, a same-origin GET)
    try:
        netloc = urlsplit(origin.decode("latin-1")).netloc.lower()
    except ValueError:
        return True
    # `Origin: null` (sandboxed frame, file://) has no netloc: never this API.
    return not netloc or netloc != headers.get(b"host", b"").decode("latin-1").lower()


def key_matches(header: bytes, keys: list[bytes]) -> bool:
    scheme, _, token = header.partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token:
        return False
    # Compare with every key, without stopping at a match: constant time per key.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token, key)
    return matched


def _unauthorized() -> JSONResponse:
    return problem(
        401,
        "missing or invalid API key: send `Authorization: Bearer <key>`",
        headers={"WWW-Authenticate": "Bearer"},
    )


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> JSONResponse | None:
        headers = dict(scope["headers"])
        if not self.keys and on_network_address(scope):
            return problem(
                403,
                "no API key is configured (DRIP_API_KEYS): this API answers on loopback only",
                code="loopback_only",
            )
        path = get_route_path(scope)
        if is_open(path):
            return None
        if is_dashboard(path):
            return None if self.keys else local_mode_refusal(scope["method"], headers)
        if self.keys:
            return (
                None
                if key_matches(headers.get(b"authorization", b""), self.keys)
                else (_unauthorized())
            )
        return local_mode_refusal(scope["method"], headers)


def local_mode_refusal(method: str, headers: dict[bytes, bytes]) -> JSONResponse | None:
    """Keyless: only this machine's own clients, never a web page on another site."""
    name = host_name(headers.get(b"host", b"").decode("latin-1"))
    if not is_loopback(name):
        return problem(
            421,
            "no API key is configured (DRIP_API_KEYS): this API answers only to loopback host "
            "names (localhost, 127.0.0.1, [::1]), not to "
            f"{name or 'a request without a Host header'}",
            code="not_a_loopback_host",
        )
    if method not in SAFE_METHODS and cross_site(headers):
        return problem(
            403,
            "cross-site request refused: without DRIP_API_KEYS, state-changing calls are "
            "accepted only from this API's own origin",
            code="cross_site_request",
        )
    return None


def require_api_key(request: Request) -> None:
    """The router-level check (see the module docstring): with keys configured, a route only
    runs for a request that carries one, whatever the middleware let through."""
    keys = [key.encode() for key in request.app.state.settings.api_keys]
    if keys and not key_matches(request.headers.get("authorization", "").encode(), keys):
        raise HTTPException(
            401,
            "missing or invalid API key: send `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )


# `app.include_router(router, dependencies=[API_KEY])`: every protected router (api/main.py).
API_KEY = Depends(require_api_key)


def install_security(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(ApiKeyMiddleware, keys=settings.api_keys)
    document_bearer(app, required=bool(settings.api_keys))


def document_bearer(app: FastAPI, required: bool) -> None:
    """Declare the bearer scheme in the OpenAPI schema, and require it on exactly the operations
    the middleware protects (none when no key is configured: the API is then open)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {})
            components.setdefault("securitySchemes", {})[SCHEME] = {
                "type": "http",
                "scheme": "bearer",
                "description": "One of the keys in DRIP_API_KEYS",
            }
            if required:
                for path, operations in schema.get("paths", {}).items():
                    if not is_open(path):
                        for operation in operations.values():
                            operation["security"] = [{SCHEME: []}]
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
