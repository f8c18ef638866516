"""The client starts fast because it stays a client: neither `drip --help` / `drip --version` nor
a command against the API import the server's settings, the database, Temporal or the web
framework. (How long the start takes is a figure for measuring, not a timed assertion here: it
moved between 0.30 and 0.34 s of processor time on this machine from run to run.)"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.cli.conftest import KEY

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("settings", "sqlmodel", "sqlalchemy", "temporalio", "fastapi", "uvicorn")
# Runs `drip ARGS` as the console script does, then names the server modules it imported.
PROBE = """
import sys
from cli.main import app
try:
    app(sys.argv[1:], prog_name="drip")
except SystemExit as exit:
    code = exit.code
loaded = [m for m in {server_only!r} if m in sys.modules]
print("server modules:", loaded, file=sys.stderr)
sys.exit(code)
"""


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    probe = PROBE.format(server_only=SERVER_ONLY)
    return subprocess.run(
        [sys.executable, "-c", probe, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_and_version_start_fast_without_server_modules() -> None:
    for args in (["--help"], ["--version"], ["plan", "--help"]):
        done = run(*args)
        assert done.returncode == 0, done.stderr
        assert "server modules: []" in done.stderr, (args, done.stderr)
    assert run("--version").stdout.startswith("drip ")
    assert "DRIP_API_URL" in run("--help").stdout and "DRIP_API_KEY" in run("--help").stdout


async def test_a_command_against_the_api_imports_no_server_module(api: httpx.AsyncClient) -> None:
    env = {"DRIP_API_URL": str(api.base_url), "DRIP_API_KEY": KEY, "DRIP_ENV": "production"}
    done = await asyncio.to_thread(run, "campaign", "list", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert "server modules: []" in done.stderr, done.stderr
