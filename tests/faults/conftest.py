"""The fault suite's machinery: the worker, the API and the Temporal dev server run as real
separate processes (so they can be killed with SIGKILL), with a real SMTP server that records
when each message arrived, on one SQLite database file per test.

Processes get their configuration the way production does: `DRIP_*` and `TEMPORAL_ADDRESS`
environment variables, read by settings.Settings in the child."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.engine import Engine
from sqlmodel import Session as DbSession
from sqlmodel import col, select

from devstack import SupervisorSettings, dev_server_args
from storage import counters
from storage.db import make_engine
from storage.migrate import upgrade
from storage.models import Delivery, Enrollment
from tests.conftest import free_port, unique_domain
from tools.smtp_sink import SmtpSink

ROOT = Path(__file__).resolve().parents[2]
SECOND = 1 / 3600  # delay_hours of one second
# A duplicate can only come from a crash inside the window: from the moment the end of DATA
# has left the worker (the server may accept it from then on, even with the worker gone) to the
# `sent` commit, which follows the server's 250 within milliseconds. The sink notes a message
# a moment after its last byte arrived, so a kill may come shortly before that note; and under
# this suite's load the commit may lag. Generous bounds on both sides:
NOTE_LAG_SECONDS = 1.0
COMMIT_LAG_SECONDS = 5.0


# --- processes -------------------------------------------------------------------------------


class Proc:
    """A child process of this test, its output in a log file; killed or stopped by its pid."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert not self.alive, f"{self.name} is already running"
        with self.log.open("ab") as out:
            out.write(f"\n--- start {self.name} at {time.time():.3f}\n".encode())
            out.flush()
            # Its own session: a signal for it (or from a terminal) never reaches pytest.
            self.process = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> float:
        """SIGKILL: no cleanup, no goodbye. Returns when it happened (wall clock). Its whole
        group goes (the API's warm simulation server too), as under make run's supervisor."""
        assert self.process is not None and self.alive, f"{self.name} is not running"
        at = time.time()
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        return at

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM and wait; SIGKILL if it will not go. Also ends what it started itself."""
        if self.process is None:
            return
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # its own process group, leftovers only

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(line[:300] for line in text.splitlines()[-lines:])


def answers(url: str, owner: Proc) -> bool:
    """The API at `url` answers /healthz; `owner` (it, or the supervisor it runs under) lives."""
    assert owner.alive, f"{owner.name} exited:\n{owner.tail()}"
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def child_env(**values: str) -> dict[str, str]:
    """This environment without any DRIP_/TEMPORAL_ setting of the caller's, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIP_", "TEMPORAL_"))}
    env.update(PYTHONUNBUFFERED="1", DRIP_LOG_LEVEL="WARNING", **values)
    return env


class DevServer(Proc):
    """The real Temporal dev server on a SQLite file, as `make run` starts it."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        settings = SupervisorSettings(
            temporal_address=f"127.0.0.1:{self.port}", temporal_ui_port=free_port()
        )
        argv = [str(Path(sys.executable).parent / "temporal"),
                *dev_server_args(settings, tmp / "temporal.db"), "--headless"]  # fmt: skip
        super().__init__("temporal", argv, child_env(), tmp / "temporal.log")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        wait_for(lambda: port_open(self.port), 60, "the Temporal dev server to listen")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


async def until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll a sync or async check until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(every)


# --- the SMTP server -------------------------------------------------------------------------


@dataclass
class Arrival:
    at: float  # wall clock
    delivery_id: str
    to: str
    subject: str


class RecordingSink(SmtpSink):
    """The real aiosmtpd sink, noting when each message arrived, and able to go away and come
    back on the same port (refusing connections meanwhile)."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.arrivals: list[Arrival] = []
        self.closing = False  # going away: connections still open take no new message
        self._open: set[int] = set()  # sessions between an accepted RCPT and their DATA's reply

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        if self.closing:  # before DATA: a definite refusal, the send retried later
            return "421 4.3.2 Service shutting down"
        reply = await super().handle_RCPT(server, session, envelope, address, options)
        if reply.startswith("250"):
            with self._lock:
                self._open.add(id(session))
        return reply

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        with self._lock:
            self._open.discard(id(session))
        return reply

    def kept(self, message: EmailMessage) -> None:
        self.arrivals.append(
            Arrival(time.time(), _delivery_id(message), str(message["To"]).lower(),
                    str(message["Subject"]))
        )  # fmt: skip

    def count(self) -> int:
        with self._lock:
            return len(self.arrivals)

    def snapshot(self) -> list[Arrival]:
        with self._lock:
            return list(self.arrivals)

    def refuse(self) -> None:
        """Stop listening (new connections are refused) and take no new message on the
        connections still open (the worker keeps them); let the messages already past RCPT
        finish (up to 10 s), then drop every connection. A message cut between its end of DATA
        and the reply is uncertain: tests/activities/test_send_activity.py's case, not this."""
        controller = self._controller
        assert controller.server is not None
        self.closing = True
        controller.loop.call_soon_threadsafe(controller.server.close)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self._lock:
                if not self._open:
                    break
            time.sleep(0.05)
        controller.stop()
        assert not port_open(self.port), "the SMTP port should refuse connections now"

    def accept(self) -> None:
        """Listen again, on the same port."""
        self.closing = False
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()


def _delivery_id(message: EmailMessage) -> str:
    """The delivery id, from the Message-ID (`<id@domain>`): whatever the correlation header's
    name, the id is there too."""
    return str(message["Message-ID"]).strip().strip("<>").partition("@")[0]


@pytest.fixture
def sink() -> Iterator[RecordingSink]:
    server = RecordingSink(port=free_port())
    server.start()
    yield server
    with contextlib.suppress(Exception):  # may already be stopped by the test
        server.stop()


# --- the system as separate processes --------------------------------------------------------


@dataclass
class Stack:
    """Temporal, worker and API as separate processes on one SQLite file and one SMTP sink."""

    tmp: Path
    sink: RecordingSink
    temporal: DevServer
    database_url: str
    api_port: int = field(default_factory=free_port)
    kills: list[float] = field(default_factory=list)  # when the worker was SIGKILLed
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        env = child_env(
            **self.extra_env,
            DRIP_DATABASE_URL=self.database_url,
            DRIP_VAR_DIR=str(self.tmp / "var"),
            DRIP_SMTP_URL=self.sink.url,
            DRIP_FROM_EMAIL="hello@drip.example.com",
            DRIP_API_PORT=str(self.api_port),
            DRIP_OUTBOX_INTERVAL_SECONDS="1",
            TEMPORAL_ADDRESS=self.temporal.address,
        )
        self.worker = Proc("worker", [sys.executable, "worker.py"], env, self.tmp / "worker.log")
        self.api = Proc(
            "api",
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
             "--port", str(self.api_port), "--log-level", "warning"],
            env, self.tmp / "api.log",
        )  # fmt: skip
        self.engine: Engine = make_engine(self.database_url)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start_api(self) -> None:
        self.api.start()
        wait_for(lambda: answers(self.url, self.api), 60, "the API to answer /healthz")

    def worker_env(self, **values: str) -> None:
        """Settings for the worker's next start (e.g. DRIP_UNCERTAIN_SENDS)."""
        self.worker.env = {**self.worker.env, **values}

    def kill_worker(self) -> float:
        at = self.worker.kill()
        self.kills.append(at)
        return at

    def stop(self) -> None:
        for proc in (self.worker, self.api, self.temporal):
            proc.stop()
        self.engine.dispose()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ({p.log}):\n{p.tail()}"
                         for p in (self.worker, self.api, self.temporal))  # fmt: skip


@contextlib.contextmanager
def open_stack(
    tmp: Path, sink: RecordingSink, database_url: str, **extra_env: str
) -> Iterator[Stack]:
    """A fresh dev server, then the API and a worker: three separate processes, running."""
    upgrade(database_url)  # before the worker and API start, so they never race the migration
    system = Stack(tmp, sink, DevServer(tmp), database_url, extra_env=extra_env)
    try:
        system.temporal.start()
        system.start_api()
        system.worker.start()
        yield system
    finally:
        system.stop()


@pytest.fixture
def stack(tmp_path: Path, sink: RecordingSink, request: pytest.FixtureRequest) -> Iterator[Stack]:
    with open_stack(tmp_path, sink, f"sqlite:///{tmp_path / 'drip.db'}") as system:
        yield system
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(system.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)  # the fixtures above print logs on failure
    return report


@pytest.fixture
def say(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print past pytest's capture: every fault test reports what it counted."""
    said: list[str] = []

    def out(line: str) -> None:
        with capsys.disabled():
            print(("" if said else "\n") + f"    {line}", flush=True)
        said.append(line)

    return out


# --- campaigns and counting ------------------------------------------------------------------


@dataclass
class Campaign:
    id: int
    emails: list[str]
    subjects: list[str]

    @property
    def expected(self) -> set[tuple[str, str]]:
        return {(email, subject) for email in self.emails for subject in self.subjects}


async def start_campaign(
    api: httpx.AsyncClient, recipients: int, delays: list[float], name: str
) -> Campaign:
    """A campaign of len(delays) steps (delays in seconds), `recipients` fresh addresses."""
    template = await api.post(
        "/api/templates", json={"name": name, "html": "<p>Hi {{ email }}</p>"}
    )
    assert template.status_code == 201, template.text
    subjects = [f"{name} step {n}" for n in range(1, len(delays) + 1)]
    steps = [{"subject": subject, "delay_hours": delay * SECOND, "template_id": template.json()["id"]}
             for subject, delay in zip(subjects, delays, strict=True)]  # fmt: skip
    created = await api.post("/api/campaigns", json={"name": name, "steps": steps})
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    activated = await api.patch(f"/api/campaigns/{cid}", json={"status": "active"})
    assert activated.status_code == 200, activated.text
    domain = unique_domain()
    emails = [f"r{n:03d}@{domain}" for n in range(recipients)]
    await enroll(api, cid, emails)
    return Campaign(cid, emails, subjects)


async def enroll(api: httpx.AsyncClient, campaign_id: int, emails: list[str]) -> None:
    response = await api.post(f"/api/campaigns/{campaign_id}/recipients",
                              json={"recipients": [{"email": e} for e in emails]})  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["enrolled"] == len(emails), response.text


def finished(engine: Engine, campaign_id: int) -> tuple[int, Counter[str]]:
    """How many journeys of the campaign have finished, and their statuses."""
    with DbSession(engine) as session:
        rows = session.exec(select(Enrollment).where(Enrollment.campaign_id == campaign_id)).all()
    done = [e for e in rows if e.finished_at is not None]
    return len(done), Counter(e.status for e in done)


async def all_finished(engine: Engine, campaign: Campaign, timeout: float) -> Counter[str]:
    def check() -> Counter[str] | None:
        count, statuses = finished(engine, campaign.id)
        return statuses if count == len(campaign.emails) else None

    return await until(check, timeout, f"all {len(campaign.emails)} journeys to finish", every=1)


def deliveries(engine: Engine, campaign_id: int) -> dict[str, Delivery]:
    with DbSession(engine) as session:
        rows = session.exec(select(Delivery).where(col(Delivery.campaign_id) == campaign_id)).all()
    return {d.id: d for d in rows}


@dataclass
class Tally:
    received: int  # messages the SMTP server accepted, copies included
    expected: int
    missing: list[tuple[str, str]]  # (recipient, subject) never received
    uncertain: dict[str, tuple[str, str]]  # delivery id -> its pair, held as uncertain
    lost: list[tuple[str, str]]  # missing and not listed uncertain: broken promise
    duplicates: dict[str, list[Arrival]]  # delivery id -> its copies
    unexplained: list[str]
    explanations: list[str]
    # (step id, metric) -> (running counter, recomputed from the rows), where they differ
    stats_diff: dict[tuple[int, str], tuple[int, int]]

    @property
    def as_promised(self) -> bool:
        """Nothing lost (every message received or listed uncertain), no duplicate but those
        the mode allows, the stats counted each once."""
        return not self.lost and not self.unexplained and not self.stats_diff

    def counts(self) -> str:
        received_uncertain = len(set(self.uncertain.values()) - set(self.missing))
        return (f"sent {self.expected - len(self.missing)} of {self.expected}, "
                f"duplicates {len(self.duplicates)}, uncertain {len(self.uncertain)} "
                f"({received_uncertain} of them received), lost {len(self.lost)}")  # fmt: skip

    def lines(self) -> list[str]:
        out = [self.counts()]
        out += [f"  duplicate {line}" for line in self.explanations]
        out += [f"  UNEXPLAINED duplicate {d}" for d in self.unexplained]
        out += [f"  uncertain {d} {pair}" for d, pair in sorted(self.uncertain.items())[:10]]
        out += [f"  LOST {m}" for m in self.lost[:10]]
        out.append(f"stats counters differ from the rows: {self.stats_diff}" if self.stats_diff
                   else "stats counters agree with the rows (each send counted once)")  # fmt: skip
        return out


def utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite hands back naive UTC


def tally(
    stack_engine: Engine,
    sink: RecordingSink,
    campaign: Campaign,
    kills: list[float],
    mode: str = "hold",
) -> Tally:
    """Count what arrived per (recipient, step) and per delivery id. Under `hold` (the default
    DRIP_UNCERTAIN_SENDS) no duplicate is allowed, and a message not received must be listed
    uncertain. Under `resend` nothing may be missing, and a duplicate is explained only by the
    one window: the worker was killed just as the first copy was accepted (within
    NOTE_LAG_SECONDS before it, as the sink notes it late) or after it but before the `sent`
    commit (COMMIT_LAG_SECONDS), and the retry sent it again and committed `sent` after it."""
    mine = set(campaign.emails)
    arrivals = [a for a in sink.snapshot() if a.to in mine]
    pairs = Counter((a.to, a.subject) for a in arrivals)
    by_delivery: dict[str, list[Arrival]] = {}
    for a in arrivals:
        by_delivery.setdefault(a.delivery_id, []).append(a)
    rows = deliveries(stack_engine, campaign.id)
    with DbSession(stack_engine) as session:
        emails = {e.id: e.email for e in session.exec(
            select(Enrollment).where(Enrollment.campaign_id == campaign.id))}  # fmt: skip
    subjects = dict(enumerate(campaign.subjects, start=1))
    uncertain = {d.id: (emails[d.enrollment_id], subjects[d.step_order])
                 for d in rows.values() if d.status == "uncertain"}  # fmt: skip
    duplicates = {d: copies for d, copies in by_delivery.items() if len(copies) > 1}
    # Two different delivery ids for one (recipient, step) would be a bug of the delivery row.
    doubled_pairs = {p for p, n in pairs.items() if n > 1}
    assert doubled_pairs <= {(c[0].to, c[0].subject) for c in duplicates.values()}, (
        f"one step sent under two delivery ids: {sorted(doubled_pairs)[:5]}"
    )
    unexplained, explanations = [], []
    for delivery_id, copies in duplicates.items():
        row = rows.get(delivery_id)
        first, second = copies[0].at, copies[1].at
        kill = next((k for k in kills if first - NOTE_LAG_SECONDS <= k <= second), None)
        ok = (
            mode == "resend"
            and row is not None and row.send_started_at is not None and row.status == "sent"
            and row.sent_at is not None and kill is not None
            and kill - first <= COMMIT_LAG_SECONDS and utc(row.sent_at).timestamp() > kill
        )  # fmt: skip
        text = (f"{delivery_id} ({copies[0].to}, {copies[0].subject}): copies at "
                f"{', '.join(f'{c.at:.3f}' for c in copies)}; kill at "
                f"{f'{kill:.3f}' if kill else 'none between them'}"
                + (f" ({kill - first:+.3f} s from the first copy's acceptance)" if kill else "")
                + (f"; send_started_at {row.send_started_at}, sent_at {row.sent_at}" if row else ""))  # fmt: skip
        (explanations if ok else unexplained).append(text)
    with DbSession(stack_engine) as session:
        running = counters.read(session, campaign.id)
        truth = counters.from_rows(session, campaign.id)
    stats_diff = {k: (running.get(k, 0), truth.get(k, 0))
                  for k in set(running) | set(truth) if running.get(k, 0) != truth.get(k, 0)}  # fmt: skip
    missing = sorted(campaign.expected - set(pairs))
    held = set(uncertain.values()) if mode == "hold" else set()
    return Tally(
        stats_diff=stats_diff,
        received=len(arrivals),
        expected=len(campaign.expected),
        missing=missing,
        uncertain=uncertain,
        lost=[m for m in missing if m not in held],
        duplicates=duplicates,
        unexplained=unexplained,
        explanations=explanations,
    )


def timeline(sink: RecordingSink, since: float, bucket: float = 10.0) -> str:
    """Messages received per `bucket` seconds since `since` (wall clock), e.g. to see a stall."""
    counts = Counter(int((a.at - since) // bucket) for a in sink.snapshot() if a.at >= since)
    last = max(counts, default=-1)
    return " ".join(str(counts.get(n, 0)) for n in range(last + 1))


@contextlib.asynccontextmanager
async def http(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        yield client
