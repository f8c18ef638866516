"""Issue 11's fault suite for sending: the worker SIGKILLed again and again at peak sending,
under each DRIP_UNCERTAIN_SENDS; a writer holding the SQLite write lock for 40 s; the app's
PostgreSQL connections killed. Each prints its counts: sent, duplicates, uncertain, lost.

One stack (Temporal, API, worker as processes, one SQLite file, one SMTP sink) serves the
SQLite scenarios in turn, each with its own campaign: only the worker's settings change."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy

from tests.conftest import POSTGRES_URL, REQUIRE_POSTGRES, free_port
from tests.faults.conftest import (
    RecordingSink,
    Stack,
    Tally,
    all_finished,
    http,
    open_stack,
    start_campaign,
    tally,
    timeline,
    until,
)

pytestmark = pytest.mark.slow

RECIPIENTS = 200
DELAYS = [0, 3, 3]  # seconds before each of the three steps
KILLS = 6
# Short leases, so a killed worker's sends are taken over within ~25 s (the lease is the send
# deadline + 15 s); a rate that keeps the campaign sending long enough to be killed 6 times.
STACK_ENV = {"DRIP_SEND_DEADLINE_SECONDS": "10", "DRIP_SEND_RATE": "15"}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("sending-faults")
    sink = RecordingSink(port=free_port())
    sink.start()
    try:
        with open_stack(tmp, sink, f"sqlite:///{tmp / 'drip.db'}", **STACK_ENV) as system:
            yield system
    finally:
        sink.stop()


@pytest.fixture
def stack(shared: Stack, request: pytest.FixtureRequest) -> Iterator[Stack]:
    shared.kills.clear()
    if not shared.worker.alive:
        shared.worker.start()
    yield shared
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print(shared.logs())


def report(say: Callable[[str], None], what: str, counted: Tally, started: float, sink) -> None:  # type: ignore[no-untyped-def]
    say(what)
    say(f"messages per 10 s: {timeline(sink, started)}")
    for line in counted.lines():
        say(line)


async def kill_repeatedly(stack: Stack, total_before: int, total: int) -> list[str]:
    """SIGKILL the worker KILLS times, each a moment after it is sending again."""
    rng = random.Random(11)
    progress = []
    for _ in range(KILLS):
        before = stack.sink.count()
        if before >= total_before + total:
            break
        await until(lambda b=before: stack.sink.count() > b, 60, "the worker to send again")
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        stack.kill_worker()
        progress.append(f"KILL@{stack.sink.count() - total_before}")
        await asyncio.sleep(1)
        stack.worker.start()
    return progress


@pytest.mark.parametrize("mode", ["hold", "resend"])
async def test_worker_killed_repeatedly_at_peak(
    stack: Stack, say: Callable[[str], None], mode: str
) -> None:
    """hold: not one message twice, each received once or listed uncertain. resend: not one
    message lost, a duplicate only from the window."""
    stack.worker.stop()
    stack.worker_env(DRIP_UNCERTAIN_SENDS=mode)
    stack.worker.start()
    async with http(stack.url) as api:
        started = time.time()
        offset = stack.sink.count()
        campaign = await start_campaign(api, RECIPIENTS, DELAYS, f"killed-{mode}")
        total = len(campaign.expected)
        await until(lambda: stack.sink.count() > offset + 20, 120, "peak sending")
        progress = await kill_repeatedly(stack, offset, total)
        statuses = await all_finished(stack.engine, campaign, timeout=420)
        listed = (await api.get("/api/deliveries", params={"status": "uncertain",
                                                          "campaign_id": campaign.id})).json()  # fmt: skip
    counted = tally(stack.engine, stack.sink, campaign, stack.kills, mode)
    report(say, f"[{mode}] {RECIPIENTS} x {len(DELAYS)}; worker SIGKILLed {len(progress)} times "
           f"({' '.join(progress)}); finished: {dict(statuses)}", counted, started, stack.sink)  # fmt: skip
    assert len(stack.kills) >= 5, "the campaign ended before the worker was killed enough"
    assert statuses == {"completed": RECIPIENTS}
    assert counted.as_promised
    assert {d["id"] for d in listed["items"]} == set(counted.uncertain)
    if mode == "hold":
        assert not counted.duplicates
    else:
        assert not counted.missing and not counted.uncertain


async def test_sqlite_write_lock_held_40_s_mid_campaign(
    stack: Stack, say: Callable[[str], None]
) -> None:
    """Another writer (a large import, say) holds SQLite's write lock for 40 s: preparation
    waits and heartbeats, nothing is sent twice, nothing is lost."""
    database = stack.database_url.split("///", 1)[1]
    async with http(stack.url) as api:
        started = time.time()
        offset = stack.sink.count()
        campaign = await start_campaign(api, RECIPIENTS, DELAYS, "sqlite-locked")
        await until(lambda: stack.sink.count() > offset + len(campaign.expected) // 4, 120,
                    "a quarter of the messages")  # fmt: skip
        locker = sqlite3.connect(database, timeout=60, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # the write lock, as a long transaction takes it
        locked_at = stack.sink.count() - offset
        await asyncio.sleep(40)
        during = stack.sink.count() - offset - locked_at
        locker.execute("ROLLBACK")
        locker.close()
        statuses = await all_finished(stack.engine, campaign, timeout=300)
    counted = tally(stack.engine, stack.sink, campaign, [])
    report(say, f"{RECIPIENTS} x {len(DELAYS)}; SQLite write lock held 40 s after {locked_at} "
           f"messages ({during} sent meanwhile); finished: {dict(statuses)}", counted, started,
           stack.sink)  # fmt: skip
    assert statuses == {"completed": RECIPIENTS}
    assert counted.as_promised and not counted.duplicates and not counted.uncertain


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A database of this test's own on the machine's PostgreSQL (never the server restarted)."""
    admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"drip_fault_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sqlalchemy.exc.OperationalError:
        if REQUIRE_POSTGRES:
            raise
        pytest.skip("no PostgreSQL server")
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def terminate_connections(admin: sqlalchemy.Engine, database: str) -> int:
    """pg_terminate_backend for every connection to `database` only."""
    with admin.connect() as conn:
        killed = conn.execute(
            sqlalchemy.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = :db AND pid <> pg_backend_pid()"
            ),
            {"db": database},
        ).scalar_one()
    return int(killed)


async def test_postgres_connections_killed_mid_campaign(
    tmp_path: Path, postgres_database: str, say: Callable[[str], None]
) -> None:
    sink = RecordingSink(port=free_port())
    sink.start()
    database = postgres_database.rsplit("/", 1)[1]
    admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with open_stack(tmp_path, sink, postgres_database, **STACK_ENV) as stack:
            async with http(stack.url) as api:
                started = time.time()
                campaign = await start_campaign(api, RECIPIENTS, DELAYS, "pg-killed")
                await until(lambda: sink.count() > len(campaign.expected) // 4, 120,
                            "a quarter of the messages")  # fmt: skip
                killed = []
                for _ in range(4):
                    killed.append(await asyncio.to_thread(terminate_connections, admin, database))
                    await asyncio.sleep(2)
                statuses = await all_finished(stack.engine, campaign, timeout=300)
            counted = tally(stack.engine, sink, campaign, [])
            report(say, f"{RECIPIENTS} x {len(DELAYS)} on PostgreSQL; the app's connections "
                   f"terminated 4 times ({'+'.join(map(str, killed))} connections); finished: "
                   f"{dict(statuses)}", counted, started, sink)  # fmt: skip
            assert sum(killed) > 0
            assert statuses == {"completed": RECIPIENTS}
            assert counted.as_promised and not counted.duplicates and not counted.uncertain
    finally:
        admin.dispose()
        sink.stop()
