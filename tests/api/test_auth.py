"""API keys: `/api/*` needs `Authorization: Bearer <key>` except the signed webhooks; tracking,
unsubscribe and ops endpoints are open; without keys the API is for this machine only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from api.security import InsecureBindError, check_bind
from settings import Settings
from tests.conftest import free_port, serve_api

ROOT = Path(__file__).resolve().parents[2]
KEYS = ["first-key-7f3a", "second-key-92c1"]


@pytest.fixture
async def keyed_api(
    settings: Settings, dev_env: WorkflowEnvironment
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_api(settings.model_copy(update={"api_keys": KEYS}), dev_env.client) as http:
        yield http


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/json"
    assert "API key" in response.json()["detail"]


async def test_no_key_or_a_wrong_one_is_refused(keyed_api: httpx.AsyncClient) -> None:
    assert_refused(await keyed_api.get("/api/campaigns"))
    assert_refused(await keyed_api.get("/api/campaigns", headers=bearer("wrong-key")))
    assert_refused(await keyed_api.get("/api/campaigns", headers=bearer(KEYS[0] + "x")))
    assert_refused(await keyed_api.get("/api/campaigns", headers=bearer(KEYS[0][:-1])))
    assert_refused(await keyed_api.get("/api/campaigns", headers={"Authorization": KEYS[0]}))
    assert_refused(
        await keyed_api.get("/api/campaigns", headers={"Authorization": f"Basic {KEYS[0]}"})
    )
    assert_refused(await keyed_api.get("/api/campaigns", headers={"Authorization": "Bearer"}))
    # Refused before the body is read: a malformed body without a key is a 401, not a 422.
    assert_refused(await keyed_api.post("/api/campaigns", content=b"{not json"))
    # Unknown /api paths too: no key, no hint of what exists.
    assert_refused(await keyed_api.get("/api/no-such-thing"))


async def test_each_configured_key_is_accepted(keyed_api: httpx.AsyncClient) -> None:
    for key in KEYS:
        response = await keyed_api.get("/api/campaigns", headers=bearer(key))
        assert response.status_code == 200, response.text
    created = await keyed_api.post(
        "/api/templates", json={"name": "t", "html": "<p>hi</p>"}, headers=bearer(KEYS[1])
    )
    assert created.status_code == 201, created.text
    # The scheme name is case-insensitive (RFC 7235).
    response = await keyed_api.get("/api/templates", headers={"Authorization": f"bearer {KEYS[0]}"})
    assert response.status_code == 200
    assert [t["id"] for t in response.json()] == [created.json()["id"]]


async def test_webhooks_tracking_and_ops_are_open(keyed_api: httpx.AsyncClient) -> None:
    # The webhook route itself answers (no provider configured here), not the key check.
    webhook = await keyed_api.post("/api/webhooks/sendgrid", content=b"[]")
    assert webhook.status_code == 404, webhook.text
    assert "www-authenticate" not in webhook.headers
    assert "webhook is not configured" in webhook.json()["detail"]
    pixel = await keyed_api.get("/t/o/not-a-token.gif")
    assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
    unsubscribe = await keyed_api.get("/u/not-a-token")
    assert unsubscribe.status_code == 404 and "www-authenticate" not in unsubscribe.headers
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        response = await keyed_api.get(path)
        assert response.status_code == 200, (path, response.text)


async def test_openapi_declares_the_bearer_scheme_where_it_is_enforced(
    keyed_api: httpx.AsyncClient,
) -> None:
    schema = (await keyed_api.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "One of the keys in DRIP_API_KEYS",
    }
    required = {
        (path, method)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if operation.get("security") == [{"bearerAuth": []}]
    }
    assert ("/api/campaigns", "get") in required
    assert ("/api/campaigns/{campaign_id}/recipients", "post") in required
    everything = {(p, m) for p, ops in schema["paths"].items() for m in ops}
    assert required == {(p, m) for p, m in everything if p.startswith("/api/")} - {
        (p, m) for p, m in everything if p.startswith("/api/webhooks/")
    }
    assert ("/api/webhooks/{provider}", "post") in everything
    assert ("/healthz", "get") in everything and ("/healthz", "get") not in required


async def test_without_keys_the_api_is_open_on_loopback(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/campaigns")).status_code == 200
    schema = (await api.get("/openapi.json")).json()
    assert "bearerAuth" in schema["components"]["securitySchemes"]
    assert all("security" not in op for ops in schema["paths"].values() for op in ops.values())


def test_check_bind() -> None:
    with pytest.raises(InsecureBindError, match="DRIP_API_KEYS"):
        check_bind(Settings(api_host="0.0.0.0"))
    with pytest.raises(InsecureBindError):
        check_bind(Settings(api_host="::"))
    with pytest.raises(InsecureBindError):
        check_bind(Settings(api_host="192.0.2.10"))
    check_bind(Settings(api_host="0.0.0.0", api_keys="k1,k2"))
    for host in ("127.0.0.1", "::1", "localhost"):
        check_bind(Settings(api_host=host))


def test_keyless_loopback_start_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="api.security"):
        check_bind(Settings(api_host="127.0.0.1"))
    assert "no DRIP_API_KEYS" in caplog.text


def keyless_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DRIP_API_KEYS"}
    env.update(DRIP_VAR_DIR=str(tmp_path / "var"), DRIP_API_KEYS="", **extra)
    return env


def test_uvicorn_refuses_to_start_on_a_public_host_without_keys(tmp_path: Path) -> None:
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
         "--port", str(port)],
        cwd=ROOT,
        env=keyless_env(tmp_path, DRIP_API_HOST="0.0.0.0", DRIP_API_PORT=str(port)),
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "refusing to serve on 0.0.0.0 without an API key" in done.stderr
    assert not (tmp_path / "var" / "drip.db").exists()  # refused before touching anything


def test_make_run_refuses_a_public_host_without_keys(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "devstack.py"],
        cwd=ROOT,
        env=keyless_env(tmp_path, DRIP_API_HOST="0.0.0.0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to serve on 0.0.0.0" in done.stderr
    assert not (tmp_path / "var" / "temporal.db").exists()


def network_address() -> str | None:
    """This machine's address on its default route, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@contextlib.asynccontextmanager
async def serve_on_all_interfaces(settings: Settings, dev_env: WorkflowEnvironment):  # type: ignore[no-untyped-def]
    """uvicorn told `--host 0.0.0.0` while the settings still say loopback."""
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, temporal=dev_env.client),
            host="0.0.0.0",
            port=settings.api_port,
            log_level="warning",
        )
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "server did not start"
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await task


async def test_without_keys_requests_on_a_network_address_are_refused(
    settings: Settings, dev_env: WorkflowEnvironment
) -> None:
    address = network_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    async with serve_on_all_interfaces(settings, dev_env):
        async with httpx.AsyncClient(timeout=30) as http:
            outside = await http.get(f"http://{address}:{settings.api_port}/api/campaigns")
            assert outside.status_code == 403, outside.text
            assert "loopback" in outside.json()["detail"]
            health = await http.get(f"http://{address}:{settings.api_port}/healthz")
            assert health.status_code == 403
            inside = await http.get(f"http://127.0.0.1:{settings.api_port}/api/campaigns")
            assert inside.status_code == 200, inside.text
