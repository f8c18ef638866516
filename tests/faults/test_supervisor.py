"""`make run`'s supervisor (devstack.py) under crashes. Its worker killed -9 mid-campaign: the
supervisor starts a new worker while the API and the Temporal server keep running, and every
journey finishes with every message delivered exactly once. Its API killed -9: what the API had
started (the warm simulation server) dies with it instead of running on as an orphan."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage.db import make_engine
from tests.conftest import free_port
from tests.faults.conftest import (
    Proc,
    RecordingSink,
    all_finished,
    answers,
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
        command = command_of(int(child))  # "" when it just exited
        role = ("worker" if "worker.py" in command else "api" if "uvicorn" in command
                else "temporal" if "start-dev" in command else None)  # fmt: skip
        if role:
            found[role] = int(child)
    return found


@dataclass
class Supervised:
    supervisor: Proc
    url: str
    var: Path

    def api_up(self) -> bool:
        return answers(self.url, self.supervisor)


@pytest.fixture
def supervised(tmp_path: Path, sink: RecordingSink) -> Iterator[Supervised]:
    """`make run` (devstack.py) on its own var directory, its API answering."""
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
    stack = Supervised(supervisor, f"http://127.0.0.1:{api_port}", tmp_path / "var")
    try:
        wait_for(stack.api_up, 90, "make run's API")
        yield stack
    finally:
        supervisor.stop(timeout=30)  # SIGTERM: devstack stops its children cleanly


async def test_supervisor_replaces_a_killed_worker(
    supervised: Supervised, sink: RecordingSink, say: Callable[[str], None]
) -> None:
    supervisor, url = supervised.supervisor, supervised.url
    engine = make_engine(f"sqlite:///{supervised.var / 'drip.db'}")
    try:
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


def descendants(pid: int) -> dict[int, str]:
    """Every live process below `pid`, by pid, with its command line (any thread's children)."""
    found: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:
            continue  # the thread just ended
        for child in map(int, children):
            if running(child):
                found[child] = command_of(child)
                found.update(descendants(child))
    return found


def command_of(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return ""
    return argv.replace(b"\0", b" ").decode(errors="replace")


def running(pid: int) -> bool:
    """Alive and not a zombie (one killed but not yet reaped by whoever adopted it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def simulation_servers(pid: int) -> set[int]:
    return {p for p, command in descendants(pid).items() if "temporal-test-server" in command}


def test_a_killed_api_takes_what_it_started_with_it(
    supervised: Supervised, say: Callable[[str], None]
) -> None:
    supervisor = supervised.supervisor
    api = wait_for(lambda: children(supervisor.pid).get("api"), 30, "the API child")
    # The API keeps a time-skipping server warm for rehearsals (DRIP_SIMULATION_WARM, the default).
    warm = wait_for(lambda: simulation_servers(api), 60, "the API's warm simulation server")
    os.kill(api, signal.SIGKILL)
    new_api = wait_for(
        lambda: (c := children(supervisor.pid).get("api")) not in (None, api) and c, 30,
        "the supervisor to start a new API",
    )  # fmt: skip
    wait_for(supervised.api_up, 60, "the new API")
    rewarmed = wait_for(lambda: simulation_servers(new_api), 60, "the new API's warm server")
    deadline = time.monotonic() + 10  # SIGKILLed with the API: gone by now, give it a moment
    while any(map(running, warm)) and time.monotonic() < deadline:
        time.sleep(0.2)
    outlived = sorted(p for p in warm if running(p))
    say(f"API pid {api} (warm simulation server {sorted(warm)}) SIGKILLed; new API pid {new_api} "
        f"(warm server {sorted(rewarmed)}); old server still running: {outlived}")  # fmt: skip
    try:
        assert not outlived, (
            f"the killed API's simulation server outlived it: {[command_of(p) for p in outlived]}"
        )
    finally:
        for pid in outlived:  # not left behind by this test either
            os.kill(pid, signal.SIGKILL)
