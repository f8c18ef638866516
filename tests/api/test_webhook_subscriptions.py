"""`/api/webhook-subscriptions`: create (the secret shown once), list as a cursor page, get,
delete, deliveries; unknown event types and private targets are 422s naming the field."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from settings import Settings
from tests.conftest import serve_api
from tests.support.factories import error_locs


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
