"""API keys: every `/api/*` request needs `Authorization: Bearer <key>` (one of DRIP_API_KEYS),
except `/api/webhooks/*`, which verify the provider's signature instead. Tracking and
unsubscribe links (`/t/...`, `/u/...`) carry signed tokens; `/healthz`, `/readyz`, `/metrics`
and the docs are open.

One ASGI middleware, so every router added later is protected by default and a request is
refused before its body is even read. Without any key the API is for this machine only: it
refuses to start on a non-loopback DRIP_API_HOST and, since uvicorn may be told another host
than the settings say, answers 403 to requests that reach it on a non-loopback IP address."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Any

from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from settings import Settings

log = logging.getLogger(__name__)

SCHEME = "bearerAuth"


class InsecureBindError(RuntimeError):
    pass


def is_protected(path: str) -> bool:
    return path.startswith("/api/") and not path.startswith("/api/webhooks/")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
        if not self.keys:
            if not on_network_address(scope):
                return None
            return JSONResponse(
                {
                    "detail": "no API key is configured (DRIP_API_KEYS): this API answers on "
                    "loopback only"
                },
                status_code=403,
            )
        if not is_protected(scope["path"]) or self.authorized(scope):
            return None
        return JSONResponse(
            {"detail": "missing or invalid API key: send `Authorization: Bearer <key>`"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    def authorized(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return False
        # Compare with every key, without stopping at a match: constant time per key.
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(token, key)
        return matched


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
                    if is_protected(path):
                        for operation in operations.values():
                            operation["security"] = [{SCHEME: []}]
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
