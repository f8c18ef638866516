"""`make run`: the whole system on embedded defaults, in one foreground process group.

Starts the real Temporal dev server (SQLite file under var/, Web UI), the worker and the API, and
keeps them running: a process that dies is started again, so journeys carry on. Ctrl-C stops
everything cleanly. With TEMPORAL_ADDRESS set, an existing Temporal server is used instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.security import InsecureBindError, check_bind
from domain import search
from observability.logs import configure_logging
from settings import Settings, get_settings
from storage.migrate import upgrade

log = logging.getLogger("drip.devstack")

BIN = Path(sys.executable).parent
RESTART_BACKOFF_SECONDS = 2.0
# Pause/resume/archive and published versions reach journeys by batch signal; the server's
# default of one batch operation at a time per namespace would make a second campaign's change
# wait, and its 50 signals a second would take half an hour to reach 100,000 journeys
# (docs/performance.md): the journeys' own work bounds it here instead.
DEV_SERVER_TUNING = [
    "--dynamic-config-value",
    "frontend.MaxConcurrentBatchOperationPerNamespace=20",
    "--dynamic-config-value",
    "worker.batcherRPS=500",
]
# The dev server re-reads the search attribute metadata on every start or upsert that carries
# search attributes (a serialized database read; raw workflows carry none), so that attributes
# added at run time are seen at once. Ours are registered at start, and production clusters
# cache them: only drip paid it (docs/performance.md).
CACHED_SEARCH_ATTRIBUTES = [
    "--dynamic-config-value",
    "system.forceSearchAttributesCacheRefreshOnRead=false",
]


class SupervisorSettings(BaseSettings):
    """The supervisor's own knobs: the dev server it starts. The server's settings (settings.py)
    are checked here too, before anything starts, but they are the API's and the worker's."""

    model_config = SettingsConfigDict(env_prefix="DRIP_", extra="ignore")

    # An existing server: TEMPORAL_ADDRESS set means "use it", and none is started.
    temporal_address: str | None = Field(None, validation_alias="TEMPORAL_ADDRESS")
    temporal_namespace: str = Field("default", validation_alias="TEMPORAL_NAMESPACE")
    temporal_dev_port: int = 7233  # the port of the dev server started when it is unset
    temporal_ui_port: int = 8233


def temporal_binary() -> str:
    return str(BIN / "temporal")


def dev_server_args(settings: SupervisorSettings, db_file: Path) -> list[str]:
    host, _, port = (settings.temporal_address or "").rpartition(":")
    args = [
        "server", "start-dev",
        "--ip", host or "127.0.0.1",
        "--port", port or "7233",
        "--ui-port", str(settings.temporal_ui_port),
        "--namespace", settings.temporal_namespace,
        "--db-filename", str(db_file),
        # WAL: about twice the throughput of the default journal (reference/temporal-local.md).
        "--sqlite-pragma", "journal_mode=wal",
        "--sqlite-pragma", "synchronous=normal",
        "--log-level", "warn",
        *DEV_SERVER_TUNING,
        *CACHED_SEARCH_ATTRIBUTES,
        "--ui-disable-news-fetch",
    ]  # fmt: skip
    for key in search.ALL_KEYS:
        kind = "Int" if key.indexed_value_type.name == "INT" else "Keyword"
        args += ["--search-attribute", f"{key.name}={kind}"]
    return args


async def _register_search_attributes(settings: Settings) -> None:
    from temporal_client import connect_temporal, register_search_attributes

    await register_search_attributes(await connect_temporal(settings))


_handed_out: set[int] = set()


def free_port() -> int:
    """A port no one listens on now, for a server started next (tests, benches, recordings).

    Drawn below the kernel's ephemeral range: a port from there (bind to 0) can be handed to any
    other process's random port between our pick and our server's bind; the dev server takes two
    that way (its HTTP API and metrics), and once answered a test's /healthz with 404."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except OSError:
        low = 32_768  # not Linux: below every system's default range
    top = low if low > 20_000 else 65_536  # an unusual range: no room below it
    while True:
        port = random.randrange(10_000, top)
        if port in _handed_out:
            continue  # not bound yet by the server it was picked for
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use
        _handed_out.add(port)
        return port


def wait_for_port(address: str, timeout: float = 60.0) -> bool:
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


@dataclass
class Child:
    """One supervised process, in a process group of its own: what it starts (the API's warm
    simulation server) is ended with it, as a container's processes end with the container."""

    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = field(default=0)

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=os.environ.copy(), process_group=0)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 75.0) -> None:  # the worker lets running sends finish (70 s)
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.end_leftovers()

    def end_leftovers(self) -> None:
        """SIGKILL what is left of its group once it has exited (a crash cleans nothing up)."""
        if self.process is None or self.process.poll() is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


def main() -> int:
    own = SupervisorSettings()
    settings: Settings = get_settings()
    configure_logging(settings.log_level)  # first: alembic's lines below are JSON too
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    try:
        check_bind(settings)  # fail here, not in an API restart loop
    except InsecureBindError as exc:
        log.error("%s", exc)
        return 2
    upgrade(settings.database_url)  # the schema first: the worker and API start on it
    children: list[Child] = []
    own_server = own.temporal_address is None
    if own_server:
        # The worker and the API (children, which inherit the environment) use the server we start.
        os.environ["TEMPORAL_ADDRESS"] = f"127.0.0.1:{own.temporal_dev_port}"
        own = own.model_copy(update={"temporal_address": os.environ["TEMPORAL_ADDRESS"]})
        settings = settings.model_copy(update={"temporal_address": os.environ["TEMPORAL_ADDRESS"]})
        db_file = settings.var_dir / "temporal.db"
        children.append(Child("temporal", [temporal_binary(), *dev_server_args(own, db_file)]))
    children.append(Child("worker", [sys.executable, "worker.py"]))
    children.append(
        Child(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.main:app",
                "--host",
                settings.api_host,
                "--port",
                str(settings.api_port),
            ],
        )  # fmt: skip
    )
    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for child in children:
            child.start()
            if child.name == "temporal":
                if not wait_for_port(settings.temporal_address):
                    log.error("Temporal dev server did not come up")
                    return 1
                # `--search-attribute` registers them in a new server database only; an existing
                # one (var/ from an older drip) gets a newer attribute here, through the operator
                # API, before the API or the worker starts a journey that carries it.
                asyncio.run(_register_search_attributes(settings))
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        wait_for_port(f"{settings.api_host}:{settings.api_port}", timeout=30)
        log.info("drip is running: API %s, Temporal %s", api_url, settings.temporal_address)
        if sys.stdout.isatty():  # the banner is for a person at a terminal; logs stay JSON
            print(
                "\n  drip is running\n"
                f"  API:               {api_url}  (docs: {api_url}/docs)\n"
                + (
                    f"  Temporal Web UI:   http://127.0.0.1:{own.temporal_ui_port}\n"
                    if own_server
                    else f"  Temporal:          {settings.temporal_address} (existing server)\n"
                )
                + f"  Database:          {settings.database_url}\n"
                f"  Mail:              {settings.smtp_url or settings.outbox_dir}\n"
                "  Ctrl-C stops everything; running it again resumes every journey.\n",
                flush=True,
            )
        while not stopping:
            for child in children:
                if not stopping and not child.alive():
                    code = child.process.returncode if child.process else None
                    log.warning("%s exited (%s); starting it again", child.name, code)
                    child.end_leftovers()
                    time.sleep(RESTART_BACKOFF_SECONDS)
                    child.restarts += 1
                    child.start()
            time.sleep(0.5)
    finally:
        for child in reversed(children):
            child.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
