"""Request metrics (count and latency by route template, method and status) and `GET /metrics`,
which serves them with the app's own counters (observability/metrics.py).

Labelled by route template (`/api/campaigns/{campaign_id}`), never the raw path, so the number of
series stays bounded; requests no route answered share the label `unmatched`. One process per
container: several uvicorn workers in one container would each count alone (prometheus-client's
multiprocess mode is not set up)."""

from __future__ import annotations

import time

from fastapi import APIRouter, FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from observability.metrics import HTTP_LATENCY, HTTP_REQUESTS

router = APIRouter(tags=["ops"])


@router.get("/metrics", response_class=Response, include_in_schema=False)
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def route_template(scope: Scope) -> str:
    # Set by the router; absent when nothing routed the request: a 404, or a request the key
    # check refused first (its status, 401 or 403, says which).
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        counted = False

        def count() -> None:
            nonlocal counted
            counted = True
            route = route_template(scope)
            HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
            HTTP_LATENCY.labels(scope["method"], route).observe(time.perf_counter() - started)

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Before the last byte leaves: a client's next request (a scrape) sees it.
                count()
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            if not counted:  # failed before its answer was complete
                count()


def install_monitoring(app: FastAPI) -> None:
    """Outermost middleware, so refused and failed requests are counted too."""
    app.add_middleware(RequestMetrics)
    app.include_router(router)
