"""Request bodies are limited while they stream in, whatever the client declares: a Content-Length
over the limit is refused before the body is read, and a body without one (chunked) is cut off
the moment it passes the limit. Either way a problem+json 413, like every other error of this API.

(FastAPI's own `max_body_size` counts the same way, but answers a declared oversize body in plain
text, whatever the app would have said.)"""

from __future__ import annotations

import re
from collections.abc import Mapping

from fastapi import HTTPException
from starlette._utils import get_route_path
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import problem


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, default: int, routes: Mapping[str, int]) -> None:
        """`routes`: limits for routed paths matching these regular expressions."""
        self.app = app
        self.default = default
        self.routes = [(re.compile(pattern), limit) for pattern, limit in routes.items()]

    def limit_for(self, scope: Scope) -> int:
        path = get_route_path(scope)
        return next((limit for p, limit in self.routes if p.fullmatch(path)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        try:
            declared = int(Headers(scope=scope).get("content-length", "0"))
        except ValueError:
            declared = 0  # the server refuses a malformed length itself
        if declared > limit:
            await _refuse(BodyTooLarge(limit), scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException: wherever the body is being read (JSON, form, a
                    # dependency), the app's handler answers it as a JSON 413.
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started |= message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:  # raised where no handler answered it
            if started:
                raise
            await _refuse(exc, scope, receive, send)


async def _refuse(exc: BodyTooLarge, scope: Scope, receive: Receive, send: Send) -> None:
    # `Connection: close`: the rest of the body is never read, so the connection cannot be reused.
    response = problem(exc.status_code, exc.detail, headers={"Connection": "close"})
    await response(scope, receive, send)
