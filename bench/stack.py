"""The system under test, started from scratch in a temporary directory: a Temporal dev server
(SQLite file in WAL mode, as devstack.py runs it), drip's worker and API as separate processes,
the baseline worker, and an SMTP sink (aiosmtpd) that notes when each message arrives."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

import devstack
from bench.raw_workflows import RAW_TASK_QUEUE
from devstack import free_port
from domain.journey import TASK_QUEUE
from storage.migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_ADMIN_URL = os.environ.get(
    "DRIP_BENCH_POSTGRES_URL", "postgresql+psycopg://127.0.0.1:5432/test"
)


class Sink:
    """Keeps (arrival time, recipient) of every message; parses nothing else."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.count = 0
        self._lock = threading.Lock()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]  # noqa: N802
        now = time.time()
        with self._lock:
            for rcpt in envelope.rcpt_tos:
                self.arrivals[rcpt.lower()].append(now)
            self.count += 1
        return "250 OK"

    def received(self, prefix: str) -> int:
        with self._lock:
            return sum(len(v) for k, v in self.arrivals.items() if k.startswith(prefix))

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


@dataclass
class Stack:
    tmp: Path
    temporal_address: str
    sqlite_url: str
    sink: Sink
    sendgrid_key: ec.EllipticCurvePrivateKey
    processes: dict[str, Process] = field(default_factory=dict)
    api_urls: dict[str, str] = field(default_factory=dict)  # database label -> API base URL
    postgres_url: str | None = None
    client: Client | None = None
    profilers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, database_url: str, api_port: int) -> dict[str, str]:
        public = self.sendgrid_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {
            **os.environ,
            "TEMPORAL_ADDRESS": self.temporal_address,
            "DRIP_DATABASE_URL": database_url,
            "DRIP_VAR_DIR": str(self.tmp / "var"),
            "DRIP_API_PORT": str(api_port),
            "DRIP_SMTP_URL": f"smtp://127.0.0.1:{self.sink.port}",
            "DRIP_SENDGRID_WEBHOOK_PUBLIC_KEY": base64.b64encode(public).decode(),
            "DRIP_LOG_LEVEL": "WARNING",
        }

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Process:
        process = Process(name, argv, env, self.tmp / f"{name}.log")
        process.start()
        self.processes[name] = process
        return process

    async def start_api(self, label: str, database_url: str) -> str:
        port = free_port()
        self.spawn(
            f"api-{label}",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            self.env(database_url, port),
        )
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                try:
                    if (await http.get(f"{url}/healthz")).status_code == 200:
                        self.api_urls[label] = url
                        return url
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"API ({label}) did not start: see {self.tmp}/api-{label}.log")

    async def start_worker(self, name: str = "worker") -> Process:
        process = self.spawn(
            name, [sys.executable, "worker.py"], self.env(self.sqlite_url, free_port())
        )
        await self.wait_for_poller(TASK_QUEUE)
        return process

    async def start_raw_worker(self) -> Process:
        process = self.spawn(
            "raw-worker", [sys.executable, "-m", "bench.raw_worker"], self.env("", 0)
        )
        await self.wait_for_poller(RAW_TASK_QUEUE)
        return process

    async def wait_for_poller(self, queue: str) -> None:
        assert self.client is not None
        request = DescribeTaskQueueRequest(
            namespace=self.client.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
        for _ in range(600):
            if (await self.client.workflow_service.describe_task_queue(request)).pollers:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"no worker polls {queue}")

    def profile(self, directory: Path, names: list[str]) -> None:
        """py-spy on these processes until the end; flame graphs written when they stop."""
        directory.mkdir(parents=True, exist_ok=True)
        spy = str(Path(sys.executable).parent / "py-spy")
        for name in names:
            self.profilers.append(
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(self.processes[name].pid),
                        "--rate",
                        "50",
                        "--nonblocking",
                        "--gil",
                        "--format",
                        "raw",
                        "--output",
                        str(directory / f"{name}.folded"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    def stop(self) -> None:
        for profiler in self.profilers:  # SIGINT: py-spy writes its flame graph
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)
        for process in reversed(list(self.processes.values())):
            process.stop()
        self.sink.stop()
        if self.postgres_url:
            drop_postgres(self.postgres_url)


async def start_stack(keep: bool = False) -> Stack:
    tmp = Path(tempfile.mkdtemp(prefix="drip-bench-"))
    sink = Sink()
    sink.start()
    address = f"127.0.0.1:{free_port()}"
    sqlite_url = f"sqlite:///{tmp / 'drip.db'}"
    stack = Stack(tmp, address, sqlite_url, sink, ec.generate_private_key(ec.SECP256R1()))
    settings = devstack.SupervisorSettings(temporal_address=address, temporal_ui_port=free_port())
    stack.spawn(
        "temporal",
        [str(devstack.temporal_binary()), *devstack.dev_server_args(settings, tmp / "temporal.db")],
        dict(os.environ),
    )
    if not devstack.wait_for_port(address, timeout=60):
        raise RuntimeError(f"the Temporal dev server did not start: see {tmp}/temporal.log")
    for _ in range(100):
        try:
            stack.client = await Client.connect(address)
            break
        except RuntimeError:
            await asyncio.sleep(0.2)
    upgrade(sqlite_url)
    return stack


def create_postgres() -> str | None:
    """A fresh database on this machine's PostgreSQL, or None if there is none."""
    admin = sqlalchemy.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"drip_bench_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sqlalchemy.exc.OperationalError:
        return None
    finally:
        admin.dispose()
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    return url


def drop_postgres(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = sqlalchemy.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def cleanup(stack: Stack, keep: bool) -> None:
    stack.stop()
    if not keep:
        shutil.rmtree(stack.tmp, ignore_errors=True)
