"""`/api/webhook-subscriptions`: create (the secret shown once), list as a cursor page, get,
delete, deliveries; unknown event types and private targets are 422s naming the field; a
subscription made and deleted here reaches another process's facts within the cache's bound."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.testing import WorkflowEnvironment

from services.webhook_subscriptions import WANTED_TTL_SECONDS
from settings import Settings
from storage.models import WebhookDelivery
from tests.conftest import serve_api
from tests.support.factories import error_locs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def open_api(
    settings: Settings, dev_env: WorkflowEnvironment
) -> AsyncIterator[httpx.AsyncClient]:
    allowed = settings.model_copy(update={"webhook_allow_private": True})
    async with serve_api(allowed, dev_env.client) as http:
        yield http


async def test_create_shows_the_secret_once_then_list_get_delete(
    open_api: httpx.AsyncClient,
) -> None:
    api = open_api
    made = await api.post(
        "/api/webhook-subscriptions",
        json={"url": "http://127.0.0.1:9/hook", "events": ["step.sent", "journey.converted",
              "step.sent"], "description": "CRM"},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 40
    assert body["events"] == ["step.sent", "journey.converted"]  # each once, in order
    sub = body["id"]

    got = (await api.get(f"/api/webhook-subscriptions/{sub}")).json()
    assert "secret" not in got and got["description"] == "CRM"
    second = await api.post(
        "/api/webhook-subscriptions", json={"url": "http://127.0.0.1:9/b", "events": ["step.sent"]}
    )
    assert second.json()["secret"] != body["secret"]

    first_page = (await api.get("/api/webhook-subscriptions", params={"limit": 1})).json()
    assert [s["id"] for s in first_page["items"]] == [sub]
    assert all("secret" not in s for s in first_page["items"])
    rest = await api.get(
        "/api/webhook-subscriptions", params={"limit": 1, "cursor": first_page["next_cursor"]}
    )
    assert [s["id"] for s in rest.json()["items"]] == [second.json()["id"]]

    deliveries = (await api.get(f"/api/webhook-subscriptions/{sub}/deliveries")).json()
    assert deliveries == {"items": [], "next_cursor": None}

    assert (await api.delete(f"/api/webhook-subscriptions/{sub}")).status_code == 204
    gone = await api.get(f"/api/webhook-subscriptions/{sub}")
    assert gone.status_code == 404 and gone.json()["code"] == "not_found"
    assert (await api.get(f"/api/webhook-subscriptions/{sub}/deliveries")).status_code == 404


async def test_unknown_event_types_and_bad_urls_are_422_naming_the_field(
    open_api: httpx.AsyncClient,
) -> None:
    api = open_api
    unknown = await api.post(
        "/api/webhook-subscriptions",
        json={"url": "http://127.0.0.1:9/h", "events": ["step.sent", "step.opened"]},
    )
    assert unknown.status_code == 422
    assert error_locs(unknown) == [["body", "events", 1]]
    empty = await api.post(
        "/api/webhook-subscriptions", json={"url": "http://127.0.0.1:9/h", "events": []}
    )
    assert error_locs(empty) == [["body", "events"]]
    scheme = await api.post(
        "/api/webhook-subscriptions", json={"url": "ftp://127.0.0.1/h", "events": ["step.sent"]}
    )
    assert scheme.status_code == 422 and error_locs(scheme) == [["body", "url"]]
    cursor = await api.get("/api/webhook-subscriptions", params={"cursor": "nope"})
    assert error_locs(cursor) == [["query", "cursor"]]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/x", "http://localhost/x", "http://169.254.169.254/latest"]
)
async def test_private_targets_are_refused_unless_allowed(api: httpx.AsyncClient, url: str) -> None:
    refused = await api.post(
        "/api/webhook-subscriptions", json={"url": url, "events": ["step.sent"]}
    )
    assert refused.status_code == 422, refused.text
    assert error_locs(refused) == [["body", "url"]]
    assert "DRIP_WEBHOOK_ALLOW_PRIVATE" in refused.json()["errors"][0]["msg"]
    assert (await api.get("/api/webhook-subscriptions")).json()["items"] == []


def told(engine: Engine, subscription: int) -> set[int]:
    """The facts (their `n`) with a delivery row for the subscription."""
    with Session(engine) as session:
        rows = session.exec(
            select(WebhookDelivery).where(col(WebhookDelivery.subscription_id) == subscription)
        )
        return {json.loads(r.body)["data"]["n"] for r in rows}


async def test_another_process_tells_a_new_subscription_within_the_bound_and_a_deleted_none(
    open_api: httpx.AsyncClient, settings: Settings, engine: Engine
) -> None:
    # The worker's part played by another process: this one's cache changes do not reach it.
    recorder = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.fact_recorder", settings.database_url,
        cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert recorder.stdin and recorder.stdout
    try:
        # From here on its cache says nobody subscribes.
        assert await asyncio.wait_for(recorder.stdout.readline(), 60) == b"ready\n"
        made = await open_api.post(
            "/api/webhook-subscriptions",
            json={"url": "http://127.0.0.1:9/h", "events": ["step.sent"]},
        )
        created_at = time.time()
        sub = made.json()["id"]
        await asyncio.sleep(WANTED_TTL_SECONDS + 1.5)
        seen_at = time.time()
        before_delete = told(engine, sub)
        assert (await open_api.delete(f"/api/webhook-subscriptions/{sub}")).status_code == 204
        deleted_at = time.time()
        await asyncio.sleep(1)
        after_delete = told(engine, sub)  # the deletion took the rows before it
    finally:
        recorder.stdin.close()
        out, _ = await asyncio.wait_for(recorder.communicate(), 60)
    assert recorder.returncode == 0
    facts = {int(n): float(at) for n, at in (line.split() for line in out.decode().splitlines())}

    past_bound = {n for n, at in facts.items() if created_at + WANTED_TTL_SECONDS < at}
    settled = {n for n in past_bound if facts[n] < seen_at - 0.5}  # committed by then
    assert len(settled) >= 5, facts
    assert settled <= before_delete, f"untold past the bound: {sorted(settled - before_delete)}"
    after = {n for n, at in facts.items() if at > deleted_at}
    assert len(after) >= 5, facts
    assert not after & after_delete, f"told after the deletion: {sorted(after & after_delete)}"
