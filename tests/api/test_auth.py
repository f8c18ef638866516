"""API keys: everything needs `Authorization: Bearer <key>` except an allow-list (the signed
webhooks, tracking and unsubscribe links, ops endpoints and docs), whatever root path the API is
served under; without keys the API is for this machine only: loopback addresses, loopback host
names (no DNS rebinding), and no cross-site state-changing requests (no CSRF)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
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
from api.security import ApiKeyMiddleware, InsecureBindError, check_bind, is_open
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
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "unauthorized"
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
    check_bind(Settings(api_host="0.0.0.0", api_keys="k1,k2", secret_key="s" * 32))
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


@contextlib.asynccontextmanager
async def serve(  # type: ignore[no-untyped-def]
    settings: Settings, dev_env: WorkflowEnvironment, app=None, **config: object
) -> AsyncIterator[httpx.AsyncClient]:
    """The app under uvicorn with the given options (e.g. `root_path`), on loopback."""
    server = uvicorn.Server(
        uvicorn.Config(
            app or create_app(settings, temporal=dev_env.client),
            host="127.0.0.1",
            port=settings.api_port,
            log_level="warning",
            **config,  # type: ignore[arg-type]
        )
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "server did not start"
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{settings.api_port}", timeout=30
        ) as http:
            yield http
    finally:
        server.should_exit = True
        await task


async def test_a_root_path_does_not_skip_the_key(
    settings: Settings, dev_env: WorkflowEnvironment
) -> None:
    # `uvicorn --root-path /drip` behind a proxy that forwards /drip/... with the prefix
    # stripped: uvicorn puts it back into the ASGI path (/drip/api/campaigns), routing takes it
    # off again, and the key check must look at what routing sees.
    keyed = settings.model_copy(update={"api_keys": KEYS})
    async with serve(keyed, dev_env, root_path="/drip") as http:
        for path in ("/api/campaigns", "/api/templates", "/drip/api/campaigns", "/api/nothing"):
            assert_refused(await http.get(path))
        assert_refused(await http.post("/api/templates", json={"name": "t", "html": "x"}))
        assert_refused(await http.post("/api/events", json={}))
        listed = await http.get("/api/templates", headers=bearer(KEYS[0]))
        assert listed.status_code == 200 and listed.json() == [], listed.text
        assert (await http.get("/healthz")).status_code == 200
        webhook = await http.post("/api/webhooks/sendgrid", content=b"[]")
        assert webhook.status_code == 404 and "not configured" in webhook.text
        # The schema the docs page loads under the prefix marks the same operations.
        schema = (await http.get("/openapi.json")).json()
        assert schema["paths"]["/api/templates"]["get"]["security"] == [{"bearerAuth": []}]


async def test_everything_not_allow_listed_needs_the_key(keyed_api: httpx.AsyncClient) -> None:
    # Fail closed: unknown paths, near misses of the open prefixes, the bare /api.
    for path in (
        "/no-such-page",
        "/uix",
        "/api",
        "/api/webhooks",
        "/api/webhook-subscriptions",
        "/api/webhooksx/sendgrid",
        "/apix/campaigns",
        "/healthz/x",
        "/docsx",
    ):
        assert_refused(await keyed_api.get(path))
    # The root leads to the dashboard, whose own door is its sign-in session (tests/api/ui/).
    root = await keyed_api.get("/")
    assert (root.status_code, root.headers["location"]) == (307, "/ui/")
    assert (await keyed_api.get("/ui/")).headers["location"] == "/ui/login?next=/ui/"
    assert_refused(await keyed_api.delete("/api/suppressions/a@example.com"))
    assert_refused(await keyed_api.delete("/api/recipients/a@example.com"))
    assert is_open("/api/webhooks/sendgrid") and is_open("/t/o/x.gif") and is_open("/u/x")
    assert not is_open("/api/webhook-subscriptions") and not is_open("/api/webhooks")


async def test_every_protected_operation_checks_the_key_itself(
    settings: Settings, dev_env: WorkflowEnvironment
) -> None:
    # The second layer: with the middleware gone, every operation outside the allow-list still
    # refuses a request without a key (the router-level dependency), before its body is parsed.
    app = create_app(settings.model_copy(update={"api_keys": KEYS}), temporal=dev_env.client)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not ApiKeyMiddleware]
    async with serve(settings, dev_env, app=app) as http:
        schema = (await http.get("/openapi.json")).json()
        operations = [
            (method, re.sub(r"\{[^}]+\}", "1", path))
            for path, methods in schema["paths"].items()
            if not is_open(path)
            for method in methods
        ]
        assert len(operations) >= 25, operations
        for method, path in operations:
            refused = await http.request(method, path, content=b"{not json")
            assert refused.status_code == 401, (method, path, refused.text)
            assert refused.headers["www-authenticate"] == "Bearer"
        assert (await http.get("/api/templates", headers=bearer(KEYS[1]))).json() == []


# --- keyless local mode -------------------------------------------------------------------------


async def test_without_keys_a_foreign_host_name_is_misdirected(api: httpx.AsyncClient) -> None:
    # DNS rebinding: a page on evil.example re-points its name at 127.0.0.1; the browser then
    # sends `Host: evil.example` to this API.
    port = api.base_url.port
    for host in (
        "evil.example",
        f"evil.example:{port}",
        "192.168.1.5",
        "127.0.0.1.evil.example",
        "evil.example@127.0.0.1",
    ):
        response = await api.get("/api/campaigns", headers={"Host": host})
        assert response.status_code == 421, (host, response.text)
        assert "loopback host names" in response.json()["detail"]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}"):
        response = await api.get("/api/campaigns", headers={"Host": host})
        assert response.status_code == 200, (host, response.text)
    # Links and health answer whatever the name: they are public by design.
    assert (await api.get("/healthz", headers={"Host": "evil.example"})).status_code == 200


CSV = b"email,first_name\nvictim@example.com,Ann\n"


async def test_without_keys_cross_site_writes_are_refused(api: httpx.AsyncClient) -> None:
    template = await api.post("/api/templates", json={"name": "t", "html": "<p>hi</p>"})
    assert template.status_code == 201, template.text
    campaign = await api.post(
        "/api/campaigns",
        json={
            "name": "c",
            "steps": [{"subject": "s", "delay_hours": 0, "template_id": template.json()["id"]}],
        },
    )
    campaign_id = campaign.json()["id"]
    assert (await api.patch(f"/api/campaigns/{campaign_id}", json={"status": "active"})).is_success
    own = f"http://127.0.0.1:{api.base_url.port}"
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": f"http://localhost:{api.base_url.port}"},  # another origin, same machine
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": own},
    ):
        # A form on another site posting a CSV import: nothing is staged.
        response = await api.post(
            f"/api/campaigns/{campaign_id}/recipients/import",
            files={"file": ("list.csv", CSV, "text/csv")},
            headers=headers,
        )
        assert response.status_code == 403, (headers, response.text)
        assert "cross-site" in response.json()["detail"]
        deleted = await api.delete(f"/api/campaigns/{campaign_id}", headers=headers)
        assert deleted.status_code == 403
    assert (await api.get("/api/enrollment-batches/1")).status_code == 404
    # Reading cross-site is harmless (the browser keeps the answer from the page), and this
    # origin's own pages and non-browser clients may write.
    read = await api.get("/api/campaigns", headers={"Origin": "https://evil.example"})
    assert read.status_code == 200
    same = await api.post(
        f"/api/campaigns/{campaign_id}/recipients/import",
        files={"file": ("list.csv", CSV, "text/csv")},
        headers={"Origin": own, "Sec-Fetch-Site": "same-origin"},
    )
    assert same.status_code == 202, same.text


async def test_in_process_clients_work_on_a_loopback_base_url(settings: Settings) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            assert (await http.get("/api/campaigns")).status_code == 200
            created = await http.post("/api/templates", json={"name": "t", "html": "<p>x</p>"})
            assert created.status_code == 201, created.text
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            assert (await http.get("/api/campaigns")).status_code == 421
