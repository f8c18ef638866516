"""The `drip` command line against the real API over HTTP (which here requires a key, so every
test also proves the CLI sends DRIP_API_KEY), and its process commands as real subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from cli.main import app
from temporal_client import LOCAL_SERVER_STARTUP
from tests.cli.conftest import KEY, drip
from tests.conftest import free_port, unique_domain

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DRIP = Path(sys.executable).parent / "drip"  # the console script `pip install -e .` made


async def test_campaign_create_from_a_yaml_file(api: httpx.AsyncClient) -> None:
    result = await drip(api, "campaign", "create", str(HERE / "onboarding.yaml"))

    assert result.exit_code == 0, result.output
    campaign_id = int(result.stdout.strip().splitlines()[-1])
    assert f"created campaign {campaign_id} 'CLI onboarding' (active, 2 steps, 3 templates)" in (
        result.stdout
    )
    templates = {t["name"]: t for t in (await api.get("/api/templates")).json()}
    assert sorted(templates) == ["Welcome", "nudge", "thanks"]
    assert "Welcome aboard." in templates["Welcome"]["html"], "html_file is read"
    assert templates["Welcome"]["text"].startswith("Hi {{ first_name")
    campaign = (await api.get(f"/api/campaigns/{campaign_id}")).json()
    assert (campaign["name"], campaign["status"], campaign["from_name"]) == (
        "CLI onboarding",
        "active",
        "The drip team",
    )
    first, second = campaign["steps"]
    assert (first["subject"], first["delay_hours"], first["template_id"]) == (
        "Welcome, {{ first_name | default('friend') }}",
        0,
        templates["Welcome"]["id"],
    )
    assert second["condition"] == {"type": "not_opened", "step_id": first["id"], "url": None}
    assert second["alternative"] == {
        "subject": "Thanks for opening",
        "template_id": templates["thanks"]["id"],
    }


async def test_a_bad_campaign_file_creates_nothing(api: httpx.AsyncClient, tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(
        "name: X\ntemplates: {a: {html: hi}}\nsteps:\n"
        "  - {subject: S, delay_hours: 0, template: b}\n"
    )
    result = await drip(api, "campaign", "create", str(unknown))
    assert result.exit_code == 2
    assert "step 1 template 'b' is not one of the templates ['a']" in result.stderr

    # Refused by the API (a subject that is no Jinja template): the message names the field,
    # and the templates made before the refusal are deleted again.
    refused = tmp_path / "refused.yaml"
    refused.write_text(
        "name: X\ntemplates: {a: {html: hi}}\nsteps:\n"
        "  - {subject: '{{ oops', delay_hours: 0, template: a}\n"
    )
    result = await drip(api, "campaign", "create", str(refused))
    assert result.exit_code == 1
    assert "422" in result.stderr and "body.steps.0.subject" in result.stderr, result.stderr
    assert (await api.get("/api/templates")).json() == []
    assert (await api.get("/api/campaigns")).json() == []


async def test_enroll_from_csv_reports_rejected_rows(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    template = (await api.post("/api/templates", json={"name": "t", "html": "hi"})).json()["id"]
    campaign = (
        await api.post(
            "/api/campaigns",
            json={
                "name": "CSV",
                "steps": [{"subject": "Hi", "delay_hours": 24, "template_id": template}],
            },
        )
    ).json()
    cid = campaign["id"]
    assert (await api.patch(f"/api/campaigns/{cid}", json={"status": "active"})).status_code == 200
    domain = unique_domain()
    ana, ben, cy, gone = (f"{n}@{domain}" for n in ("ana", "ben", "cy", "gone"))
    suppressed = await api.post("/api/suppressions", json={"email": gone, "reason": "unsubscribe"})
    assert suppressed.status_code == 201
    csv_file = tmp_path / "recipients.csv"
    csv_file.write_text(
        "Email,first_name,plan\n"  # line 1: the header (any case for `email`)
        f"{ana},Ana,pro\n"  # 2
        f"{ben},,\n"  # 3: empty cells are left out
        ",Nobody,free\n"  # 4: no address
        "not-an-address,Bad,free\n"  # 5: invalid
        f"{ana.upper()},Ana again,pro\n"  # 6: ana again, in another chunk
        f"{gone},Gone,free\n"  # 7: unsubscribed
        f"{cy},Cy,free\n"  # 8
    )

    result = await drip(api, "enroll", str(cid), str(csv_file), "--chunk-size", "2")

    assert result.exit_code == 0, result.output
    out = result.stdout
    for label, value in (("rows", 7), ("enrolled", 3), ("already enrolled", 1), ("rejected", 3)):
        assert any(
            line.split("│")[1:3]
            and line.split("│")[1].strip() == label
            and line.split("│")[2].strip() == str(value)
            for line in out.splitlines()
        ), f"{label} {value} not in summary:\n{out}"
    rejected = [
        [cell.strip() for cell in line.split("│")[1:4]]
        for line in out.split("rejected rows")[1].splitlines()
        if line.count("│") == 4
    ]
    assert rejected[0] == ["4", "(empty)", "no email address"]
    assert rejected[1][:2] == ["5", "not-an-address"] and "invalid email" in rejected[1][2]
    assert rejected[2] == ["7", gone, "suppressed: unsubscribe"]
    assert len(rejected) == 3
    listing = (await api.get(f"/api/campaigns/{cid}/recipients")).json()
    assert sorted(item["email"] for item in listing["items"]) == sorted([ana, ben, cy])
    # No worker runs here: the journey is read from the database (after a 5 s query timeout).
    journey = await api.get(f"/api/campaigns/{cid}/recipients/{ana}")
    assert journey.status_code == 200, journey.text
    assert journey.json()["fields"] == {"first_name": "Ana", "plan": "pro"}

    # Then its stats, as a table.
    stats = await drip(api, "stats", str(cid))
    assert stats.exit_code == 0, stats.output
    assert f"campaign {cid}: CSV (active)" in stats.stdout
    rows = {
        cells[0]: cells[1]
        for line in stats.stdout.splitlines()
        if (cells := [c.strip() for c in line.split("│")[1:-1]]) and len(cells) == 2
    }
    assert rows["recipients"] == "3" and rows["completed"] == "0"
    assert rows["open rate"] == "0.0%" and rows["completion rate"] == "0.0%"


async def test_the_key_and_the_address_come_from_settings(api: httpx.AsyncClient) -> None:
    wrong = await drip(api, "stats", "1", key="not-the-key")
    assert wrong.exit_code == 1
    assert "401" in wrong.stderr and "API key" in wrong.stderr
    missing = await drip(api, "stats", "999999")
    assert (
        missing.exit_code == 1 and "404" in missing.stderr and "campaign 999999" in missing.stderr
    )
    env = {"DRIP_API_URL": f"http://127.0.0.1:{free_port()}", "DRIP_API_KEY": KEY}
    down = await asyncio.to_thread(CliRunner().invoke, app, ["stats", "1"], env=env)
    assert down.exit_code == 1 and "cannot reach the API" in down.stderr


async def test_the_client_never_needs_the_servers_settings(api: httpx.AsyncClient) -> None:
    """On a machine configured for production (DRIP_ENV=production without DRIP_SECRET_KEY,
    where the server's settings refuse to load) the client still works; a bad client setting
    is one line of error, never a settings traceback."""
    created = await api.post("/api/campaigns", json={"name": "Prod box", "steps": []})
    cid = created.json()["id"]
    env = {"DRIP_API_URL": str(api.base_url), "DRIP_API_KEY": KEY, "DRIP_ENV": "production",
           "DRIP_SECRET_KEY": None, "COLUMNS": "200"}  # fmt: skip
    stats = await asyncio.to_thread(CliRunner().invoke, app, ["stats", str(cid)], env=env)
    assert stats.exit_code == 0, stats.output
    assert f"campaign {cid}: Prod box" in stats.stdout and "open rate" in stats.stdout
    bad = {**env, "DRIP_API_URL": "not a url"}
    refused = await asyncio.to_thread(CliRunner().invoke, app, ["stats", str(cid)], env=bad)
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert refused.stderr.startswith("error: bad client setting: DRIP_API_URL"), refused.stderr


# --- process commands, as the installed console script ---------------------------------------


def run_drip(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    assert DRIP.exists(), "the `drip` console script is missing: pip install -e ."
    return subprocess.run(
        [str(DRIP), *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_drip_migrate_builds_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    done = run_drip("migrate", env={"DRIP_DATABASE_URL": url, "DRIP_VAR_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    engine = sqlalchemy.create_engine(url)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"campaign", "enrollment", "idempotency_record", "alembic_version"} <= tables


def start_drip(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen:  # type: ignore[type-arg]
    assert DRIP.exists(), "the `drip` console script is missing: pip install -e ."
    with log.open("w") as sink:
        return subprocess.Popen(
            [str(DRIP), *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen) -> int:  # type: ignore[type-arg]
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@pytest.fixture
async def own_temporal() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server of its own: a worker on the shared one would take other tests' journeys
    (same task queue) and run them against its own, empty database."""
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=LOCAL_SERVER_STARTUP,
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        ui=False,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


async def test_drip_api_and_drip_worker_start(
    tmp_path: Path, own_temporal: WorkflowEnvironment
) -> None:
    port = free_port()
    env = {
        "DRIP_DATABASE_URL": f"sqlite:///{tmp_path / 'drip.db'}",
        "DRIP_VAR_DIR": str(tmp_path),
        "DRIP_API_PORT": str(port),
        "TEMPORAL_ADDRESS": own_temporal.client.service_client.config.target_host,
    }
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    api_process = start_drip("api", env=env, log=api_log)
    worker_process = start_drip("worker", env=env, log=worker_log)
    try:
        deadline = time.monotonic() + 60
        healthy = False
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline and not healthy:
                try:
                    healthy = (
                        await http.get(f"http://127.0.0.1:{port}/healthz")
                    ).status_code == 200
                except httpx.TransportError:
                    await asyncio.sleep(0.3)
        assert healthy, api_log.read_text()
        while time.monotonic() < deadline and "worker polling" not in worker_log.read_text():
            assert worker_process.poll() is None, worker_log.read_text()
            await asyncio.sleep(0.3)
        assert "worker polling" in worker_log.read_text(), worker_log.read_text()
    finally:
        api_code, worker_code = stop(api_process), stop(worker_process)
    # uvicorn shuts down cleanly, then re-raises the signal it caught (so: -SIGTERM).
    assert api_code in (0, -signal.SIGTERM), api_log.read_text()
    assert "Application shutdown complete" in api_log.read_text()
    assert worker_code == 0, worker_log.read_text()
