"""Today's resources from the command line, against the real API: tracked events (one, a JSON
Lines file in batches, a person's event log by cursor pages, new field values), webhook
subscriptions, the frequency cap; a journey's reasons and wait printed for a human; the funnel's
conversions and cap columns."""

from __future__ import annotations

import asyncio
import importlib
import json
import pkgutil
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from cli.client import IDEMPOTENT_POSTS
from settings import Settings
from tests.cli.conftest import KEY, drip
from tests.cli.test_client import proxy
from tests.conftest import serve_api, unique_domain


async def read(api: httpx.AsyncClient, *args: str) -> Any:
    result = await drip(api, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def active_campaign(api: httpx.AsyncClient, *delays: int) -> int:
    template = (await api.post("/api/templates", json={"name": "t", "html": "<p>hi</p>"})).json()
    steps = [
        {"subject": f"Step {n}", "delay_hours": d, "template_id": template["id"]}
        for n, d in enumerate(delays, start=1)
    ]
    cid: int = (await api.post("/api/campaigns", json={"name": "C", "steps": steps})).json()["id"]
    assert (await api.patch(f"/api/campaigns/{cid}", json={"status": "active"})).is_success
    return cid


async def test_tracked_events_one_a_file_a_log_and_new_fields(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    ana = f"ana@{unique_domain()}"
    one = await read(
        api, "track", ana, "plan.upgraded", "--property", "plan=pro", "--property", "seats=3",
        "--event-id", "evt-1", "--occurred-at", "2026-11-30T09:00:00Z",
    )  # fmt: skip
    assert (one["event_id"], one["duplicate"]) == ("evt-1", False)
    again = await drip(api, "track", ana, "plan.upgraded", "--event-id", "evt-1")
    assert again.exit_code == 0 and "duplicate" in again.stdout, again.output
    assert "True" in again.stdout

    # A file: one event a line, sent 1,000 per call; wrong lines named by their number.
    lines = [
        json.dumps({"email": ana, "event": "page.viewed", "event_id": f"v{n}"}) for n in range(1002)
    ]
    lines[2] = "{not json"
    lines[5] = json.dumps({"email": ana, "event": ""})  # refused by the API
    lines.insert(7, "")  # blank lines are skipped
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n")
    with proxy(api, lose=frozenset({"/api/track/batch"})) as p:  # the first answer is lost
        done = await drip(p.url, "track", "--file", str(events), "--json")
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert (summary["accepted"], summary["duplicates"]) == (1000, 0)
    assert [r["line"] for r in summary["rejected"]] == [3, 6]
    assert summary["rejected"][1]["reason"].startswith("event:")
    batches = [s for s in p.seen if s.path == "/api/track/batch"]
    assert [(s.status, s.replayed) for s in batches] == [(202, False), (202, True), (202, False)]
    assert batches[0].key == batches[1].key != batches[2].key, "a retry keeps its call's key"
    table = await drip(api, "track", "--file", str(events))
    assert table.exit_code == 1  # some lines were rejected
    assert "0 recorded, 1000 already recorded, 2 rejected" in table.stdout, table.output

    # The person's log, newest first, by cursor pages.
    first = await read(api, "recipient", "events", ana, "--limit", "2")
    assert [e["event"] for e in first["items"]] == ["page.viewed", "page.viewed"]
    assert first["next_cursor"]
    shown = await drip(api, "recipient", "events", ana, "--limit", "2")
    assert f"more: --cursor {first['next_cursor']}" in shown.stdout, shown.output
    seen, cursor = [], None
    while True:
        page = await read(
            api, "recipient", "events", ana, "--limit", "1000", *(["--cursor", cursor] if cursor else [])
        )  # fmt: skip
        seen += page["items"]
        if not (cursor := page["next_cursor"]):
            break
    assert len(seen) == 1001 and seen[-1]["event_id"] == "evt-1"  # the oldest, last
    assert seen[-1]["properties"] == {"plan": "pro", "seats": 3}  # 3 read as a number

    # New field values for the person's running journeys.
    cid = await active_campaign(api, 24)
    await api.post(f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": ana}]})
    merged = await read(api, "recipient", "set-fields", ana, "timezone=Europe/Paris", "vip=true")
    assert merged == {"email": ana, "journeys_updated": 1}
    table = await drip(api, "recipient", "set-fields", ana, "timezone=Asia/Tokyo")
    assert f"{ana}: 1 running journeys updated" in table.stdout, table.output

    wrong = await drip(api, "track", ana)
    assert wrong.exit_code == 2 and "give EMAIL and EVENT" in wrong.stderr
    bad = await drip(api, "recipient", "set-fields", ana, "nameonly")
    assert bad.exit_code == 2 and "expected name=value" in bad.stderr


@pytest.fixture
async def hooks_api(
    settings: Settings, dev_env: WorkflowEnvironment
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with a key, accepting subscribers on this machine."""
    configured = settings.model_copy(update={"api_keys": [KEY], "webhook_allow_private": True})
    async with serve_api(configured, dev_env.client) as http:
        http.headers["Authorization"] = f"Bearer {KEY}"
        yield http


async def test_webhook_subscriptions(hooks_api: httpx.AsyncClient) -> None:
    api = hooks_api
    created = await drip(
        api, "webhook-subscriptions", "create", "http://127.0.0.1:9/hook",
        "--event", "step.sent", "--event", "journey.converted", "--description", "CRM",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    secret = created.stdout.splitlines()[-1]
    assert "signing secret (shown only now" in created.stdout and len(secret) >= 20
    listed = await read(api, "webhook-subscriptions", "list")
    (sub,) = listed["items"]
    assert (sub["url"], sub["events"], listed["next_cursor"]) == (
        "http://127.0.0.1:9/hook", ["step.sent", "journey.converted"], None,
    )  # fmt: skip
    assert secret not in json.dumps(listed), "the secret is shown once"
    assert await read(api, "webhook-subscriptions", "show", str(sub["id"])) == sub
    table = await drip(api, "webhook-subscriptions", "list")
    assert "http://127.0.0.1:9/hook" in table.stdout and "(1 shown)" in table.stdout
    deliveries = await read(api, "webhook-subscriptions", "deliveries", str(sub["id"]))
    assert deliveries == {"items": [], "next_cursor": None}
    as_json = await read(
        api, "webhook-subscriptions", "create", "http://127.0.0.1:9/b", "--event", "step.sent"
    )
    assert as_json["secret"] and as_json["secret"] != secret

    assert (await drip(api, "webhook-subscriptions", "delete", str(sub["id"]))).exit_code == 0
    gone = await drip(api, "webhook-subscriptions", "show", str(sub["id"]))
    assert gone.exit_code == 1 and "404" in gone.stderr
    refused = await drip(api, "webhook-subscriptions", "create", "ftp://x", "--event", "step.sent")
    assert refused.exit_code == 1 and "422" in refused.stderr and "url" in refused.stderr


async def test_frequency_cap(api: httpx.AsyncClient) -> None:
    none = await drip(api, "frequency-cap", "show")
    assert none.stdout == "no frequency cap is set\n", none.output
    assert await read(api, "frequency-cap", "show") is None
    set_ = await drip(api, "frequency-cap", "set", "--max", "3", "--per-hours", "24")
    assert set_.exit_code == 0, set_.output
    assert "at most 3 messages to one address in any 24 hours" in set_.stdout
    cap = await read(api, "frequency-cap", "show")
    assert (cap["max_messages"], cap["per_hours"]) == (3, 24)
    assert cap == (await api.get("/api/settings/frequency-cap")).json()
    changed = await read(api, "frequency-cap", "set", "--max", "1", "--per-hours", "0.5")
    assert (changed["max_messages"], changed["per_hours"]) == (1, 0.5)
    assert (await drip(api, "frequency-cap", "clear")).stdout == "frequency cap removed\n"
    assert (await api.get("/api/settings/frequency-cap")).status_code == 404
    assert (await drip(api, "frequency-cap", "clear")).stdout == "no frequency cap was set\n"
    refused = await drip(api, "frequency-cap", "set", "--max", "0", "--per-hours", "1")
    assert refused.exit_code == 2  # checked before anything is sent


async def test_a_journey_read_for_a_human_and_the_funnel(
    system: httpx.AsyncClient, tmp_path: Path
) -> None:
    api = system
    cid = await active_campaign(api, 0, 48)
    ana = f"ana@{unique_domain()}"
    await api.post(f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": ana}]})
    for _ in range(200):  # until step 1 is sent and the journey waits 48 h for step 2
        view = (await api.get(f"/api/campaigns/{cid}/recipients/{ana}")).json()
        if view["steps"] and view["waiting_for"]:
            break
        await asyncio.sleep(0.1)
    assert view["waiting_for"]["kind"] == "delay", view

    shown = await drip(api, "recipients", "show", str(cid), ana, "--entry", "1", key=None)
    assert shown.exit_code == 0, shown.output
    out = shown.stdout
    assert f"journey of {ana} in campaign {cid}, entry 1: active" in out, out
    waiting = view["waiting_for"]
    assert f"waiting: {waiting['reason']} (delay, until {waiting['until']})" in out, out
    assert re.search(r"│ 1\s+│ sent\s+│ " + re.escape(view["steps"][0]["reason"][:30]), out), out
    again = await read(api, "recipients", "show", str(cid), ana, "--entry", "1")
    assert (again["email"], again["entry"], again["steps"]) == (ana, 1, view["steps"])
    missing = await drip(api, "recipients", "show", str(cid), ana, "--entry", "2", key=None)
    assert missing.exit_code == 1 and "404" in missing.stderr
    removed = await read(api, "recipients", "remove", str(cid), ana, "--entry", "1")
    assert (removed["entry"], removed["status"]) == (1, "removed")

    funnel = await drip(api, "funnel", str(cid), key=None)
    assert funnel.exit_code == 0, funnel.output
    assert f"campaign {cid}: 1 recipients, 0 completed, 0 converted (0.0%)" in funnel.stdout
    header = next(line for line in funnel.stdout.splitlines() if "step_order" in line)
    for column in ("converted", "deferred_by_cap", "skipped_by_cap"):
        assert column in header, header


def test_the_posts_the_cli_repeats_are_those_the_api_replays_or_repeatable() -> None:
    """Every route the API replays by its key is retried; a subscription (its answer holds the
    secret, not replayed) is not."""
    from api import routes
    from api.idempotency import Idempotent

    replayed = set()
    for module in pkgutil.iter_modules(routes.__path__):
        router = importlib.import_module(f"api.routes.{module.name}").router
        for route in router.routes:
            if Idempotent in getattr(route, "dependencies", []):
                replayed.add(re.sub(r"\{[^}]+\}", "1", route.path))
    assert {"/api/track", "/api/track/batch", "/api/campaigns"} <= replayed
    assert all(IDEMPOTENT_POSTS.match(path) for path in replayed), replayed
    assert not IDEMPOTENT_POSTS.match("/api/webhook-subscriptions")


async def test_a_file_stopped_midway_says_where_and_runs_again_safely(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    ana = f"ana@{unique_domain()}"
    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(json.dumps({"email": ana, "event": "e", "event_id": f"v{n}"}) + "\n" for n in range(1500))
    )  # fmt: skip
    calls = {"batch": 0}

    def refuse_the_second(method: str, path: str) -> tuple[int, bytes] | None:
        if path != "/api/track/batch":
            return None
        calls["batch"] += 1
        if calls["batch"] != 2:
            return None
        return 400, json.dumps({"status": 400, "detail": "refused for the test"}).encode()

    with proxy(api, answer=refuse_the_second) as p:
        stopped = await drip(p.url, "track", "--file", str(events))
    assert stopped.exit_code == 1
    assert "400 refused for the test (stopped at line 1001; 1000 events done)" in stopped.stderr
    again = await read(api, "track", "--file", str(events))
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (500, 1000, [])
