"""Liveness and readiness, for orchestrators and load balancers.

`/healthz`: the process answers. `/readyz`: it can do its job — the database answers `SELECT 1`
and the Temporal frontend reports SERVING — else 503 naming the failed check (details only in
the log: this endpoint is open)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.engine import Engine
from temporalio.client import Client

from api.schemas import Readiness

log = logging.getLogger(__name__)

router = APIRouter(tags=["ops"])

CHECK_TIMEOUT_SECONDS = 3.0


@router.get("/healthz", operation_id="getHealth", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    operation_id="getReadiness",
    summary="Readiness: the database and Temporal answer",
    response_model=Readiness,
    responses={503: {"model": Readiness}},
)
async def readyz(request: Request) -> JSONResponse:
    checks = {
        "database": await run_check("database", ping_database(request.app.state.engine)),
        "temporal": await run_check("temporal", ping_temporal(request.app.state.journeys.client)),
    }
    ready = all(result == "ok" for result in checks.values())
    body = Readiness(status="ready" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


async def run_check(name: str, check: Awaitable[None]) -> str:
    try:
        await asyncio.wait_for(check, CHECK_TIMEOUT_SECONDS)
        return "ok"
    except Exception as exc:  # any failure means not ready; say which, log why
        log.warning("readiness check %s failed: %r", name, exc)
        return "unreachable"


async def ping_database(engine: Engine) -> None:
    def select_one() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    await asyncio.to_thread(select_one)


async def ping_temporal(client: Client) -> None:
    timeout = timedelta(seconds=CHECK_TIMEOUT_SECONDS)
    if not await client.service_client.check_health(timeout=timeout):
        raise RuntimeError("workflow service is not SERVING")
