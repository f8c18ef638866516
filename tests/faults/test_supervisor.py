"""`make run`'s supervisor (devstack.py) under a worker crash: kill -9 its worker child mid-
campaign; the supervisor starts a new worker while the API and the Temporal server keep running,
and every journey finishes with every message delivered exactly once."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from storage.db import make_engine
from tests.conftest import free_port
from tests.faults.conftest import (
    Proc,
    RecordingSink,
    all_finished,
    child_env,
    http,
    start_campaign,
    tally,
    timeline,
    until,
    wait_for,
)

pytestmark = pytest.mark.slow

RECIPIENTS = 60
DELAYS = [0, 3, 3]


def children(pid: int) -> dict[str, int]:
    """The supervisor's children by role (temporal, worker, api), from /proc."""
    found: dict[str, int] = {}
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue  # just exited
        command = b" ".join(argv).decode(errors="replace")
        role = ("worker" if "worker.py" in command else "api" if "uvicorn" in command
                else "temporal" if "start-dev" in command else None)  # fmt: skip
        if role:
            found[role] = int(child)
    return found


async def test_supervisor_replaces_a_killed_worker(
    tmp_path: Path, sink: RecordingSink, say: Callable[[str], None]
) -> None:
    api_port = free_port()
    env = child_env(
        DRIP_VAR_DIR=str(tmp_path / "var"),  # its database, outbox and Temporal file live here
        DRIP_API_PORT=str(api_port),
        DRIP_TEMPORAL_DEV_PORT=str(free_port()),
        DRIP_TEMPORAL_UI_PORT=str(free_port()),
        DRIP_SMTP_URL=sink.url,
        DRIP_FROM_EMAIL="hello@drip.example.com",
        DRIP_OUTBOX_INTERVAL_SECONDS="1",
    )
    supervisor = Proc("devstack", [sys.executable, "devstack.py"], env, tmp_path / "devstack.log")
    supervisor.start()
    url = f"http://127.0.0.1:{api_port}"
    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'drip.db'}")
    try:

        def api_up() -> bool:
            assert supervisor.alive, f"devstack exited:\n{supervisor.tail()}"
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(api_up, 90, "make run's API")
        before = wait_for(lambda: (c := children(supervisor.pid)) and len(c) == 3 and c, 30,
                          "the three children")  # fmt: skip
        async with http(url) as api:
            started = time.time()
            campaign = await start_campaign(api, RECIPIENTS, DELAYS, "supervised")
            total = len(campaign.expected)
            await until(lambda: sink.count() >= total // 4, 120, "a quarter of the messages")
            at_kill = sink.count()
            killed_at = time.time()
            os.kill(before["worker"], signal.SIGKILL)

            def replaced() -> dict[str, int] | None:
                now = children(supervisor.pid)
                return now if now.get("worker") not in (None, before["worker"]) else None

            after = await until(replaced, 30, "the supervisor to start a new worker")
            replaced_in = time.time() - killed_at
            statuses = await all_finished(engine, campaign, timeout=240)
            final = children(supervisor.pid)
            health = (await api.get("/healthz")).status_code
        counted = tally(engine, sink, campaign, [killed_at])
        say(f"make run: {RECIPIENTS} recipients x {len(DELAYS)} steps; worker pid {before['worker']} "
            f"SIGKILLed after {at_kill} messages; new worker pid {after['worker']} after "
            f"{replaced_in:.1f} s; API pid {before['api']} -> {final.get('api')}, Temporal pid "
            f"{before['temporal']} -> {final.get('temporal')}; finished: {dict(statuses)}")  # fmt: skip
        say(f"messages per 10 s: {timeline(sink, started)}")
        for line in counted.lines():
            say(line)
        assert final["api"] == before["api"] and final["temporal"] == before["temporal"], (
            "the API and the Temporal server must keep running while the worker is replaced"
        )
        assert health == 200
        assert statuses == {"completed": RECIPIENTS}
        assert counted.as_promised
    finally:
        engine.dispose()
        supervisor.stop(timeout=30)  # SIGTERM: devstack stops its children cleanly
