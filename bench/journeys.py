"""Journeys that react to the product (`make bench`, scenario `journeys`): how fast a tracked event
reaches a journey waiting on it, and how many tracked events per second are stored and
signalled, beside raw signals on the same server in the same run."""

from __future__ import annotations

import time
import uuid

import httpx
from sqlalchemy import func, select
from sqlmodel import col
from temporalio.client import Client

from bench.measure import Table, ms, percentile, until, wait_quiet
from bench.raw_workflows import RAW_TASK_QUEUE, RawSleep
from bench.scenarios import (
    YEAR_IN_HOURS,
    Sizes,
    State,
    count,
    drained,
    drip_pids,
    gather_limited,
    raw_starts,
)
from bench.stack import Stack
from domain.journey import TASK_QUEUE, WaitingKind, workflow_id
from storage.db import make_engine
from storage.models import TrackedEvent
from workflows.recipient import RecipientWorkflow

BATCH = 500  # tracked events per POST /api/track/batch


async def run(stack: Stack, table: Table, sizes: Sizes, state: State) -> None:
    http = httpx.AsyncClient(base_url=stack.api_urls["sqlite"], timeout=600)
    try:
        await reaction(stack, http, table, sizes)
        await ingest(stack, http, table, sizes, state)
    finally:
        await http.aclose()


async def campaign(http: httpx.AsyncClient, name: str, step: dict[str, object]) -> int:
    """An active one-step campaign whose step has this delay and condition."""
    template = await http.post("/api/templates", json={"name": name, "html": "<p>Hi</p>"})
    steps = [{"subject": name, "template_id": template.json()["id"], **step}]
    created = await http.post("/api/campaigns", json={"name": name, "steps": steps})
    assert created.status_code == 201, created.text
    cid: int = created.json()["id"]
    activated = await http.patch(f"/api/campaigns/{cid}", json={"status": "active"})
    assert activated.status_code == 200, activated.text
    return cid


async def enroll_all(client: Client, http: httpx.AsyncClient, cid: int, emails: list[str]) -> None:
    """Enroll them (10,000 at most per call) and wait until every journey ran its first task."""
    for start in range(0, len(emails), 10_000):
        chunk = [{"email": e} for e in emails[start : start + 10_000]]
        response = await http.post(f"/api/campaigns/{cid}/recipients", json={"recipients": chunk})
        assert response.status_code in (200, 202), response.text
    running = f'CampaignId = {cid} AND ExecutionStatus = "Running"'

    async def all_running() -> bool:
        return await count(client, running) >= len(emails)

    limit = max(1800, len(emails) / 20)  # 100,000 at 20 a second on a loaded machine
    await until(all_running, limit=limit, what="the journeys to show as Running", every=0.25)
    await drained(client, TASK_QUEUE)


# --- event -> journey reaction ----------------------------------------------------------------


async def reaction(stack: Stack, http: httpx.AsyncClient, table: Table, sizes: Sizes) -> None:
    """Journeys wait (wait-until, 24 h) for `bench.upgraded`; one tracked event at a time, from
    its 202 to the step's message at the SMTP sink."""
    client = stack.client
    assert client is not None
    samples = sizes.latency_samples
    print(f"event -> journey reaction: {samples} tracked events, one at a time", flush=True)
    condition = {"type": "performed", "event": "bench.upgraded", "wait_hours": 24}
    cid = await campaign(http, "react", {"delay_hours": 0, "condition": condition})
    emails = [f"r{i}@react.bench.example" for i in range(samples)]
    await enroll_all(client, http, cid, emails)

    async def all_waiting() -> bool:
        for email in emails:
            handle = client.get_workflow_handle_for(RecipientWorkflow.run, workflow_id(cid, email))
            state = await handle.query(RecipientWorkflow.progress)
            if state.waiting_for is None or state.waiting_for.kind != WaitingKind.WAIT_UNTIL:
                return False
        return True

    await until(all_waiting, limit=300, what="every journey to wait on its condition", every=0.5)
    await wait_quiet(drip_pids(stack))
    reactions, answers = [], []
    for email in emails:
        posted = time.time()
        response = await http.post(
            "/api/track", json={"email": email, "event": "bench.upgraded", "properties": {}}
        )
        accepted = time.time()
        assert response.status_code == 202, response.text

        async def arrived(email: str = email) -> bool:
            return bool(stack.sink.arrivals.get(email))

        await until(arrived, limit=60, what=f"{email}'s message", every=0.002)
        reactions.append(stack.sink.arrivals[email][0] - accepted)
        answers.append(accepted - posted)
    p50 = percentile(reactions, 50)
    table.add(
        "event -> journey reaction (tracked event accepted -> wait-until message at SMTP)",
        f"p50 {ms(p50)}, p99 {ms(percentile(reactions, 99))}",
        f"(POST /api/track answered: p50 {ms(percentile(answers, 50))})",
        "",
        "p50 < 250 ms",
        p50 < 0.25,
    )


# --- tracked events stored and signalled ------------------------------------------------------


async def ingest(
    stack: Stack, http: httpx.AsyncClient, table: Table, sizes: Sizes, state: State
) -> None:
    """`sizes.events` journeys listen to `bench.seen` (a condition of their step, due in a
    year); as many tracked events, one per journey, posted in batches of 500 (4 at once), until
    every one is stored and signalled — beside raw signals to as many raw sleepers."""
    client, n = stack.client, sizes.events
    assert client is not None
    print(f"tracked events: {n:,} in batches of {BATCH}, stored and signalled", flush=True)
    condition = {"type": "performed", "event": "bench.seen"}
    cid = await campaign(http, "listen", {"delay_hours": YEAR_IN_HOURS, "condition": condition})
    emails = [f"t{i}@track.bench.example" for i in range(n)]
    await enroll_all(client, http, cid, emails)
    sleepers = state.raw_sleepers or []
    if len(sleepers) < n:  # the enrollment scenario did not run: sleepers of our own
        prefix = f"raw-track-{uuid.uuid4().hex[:6]}"
        await raw_starts(client, prefix, n, 32)
        sleepers = [f"{prefix}-{i}" for i in range(n)]
        await drained(client, RAW_TASK_QUEUE)
    await wait_quiet(drip_pids(stack))

    batches = [
        [{"email": e, "event": "bench.seen", "event_id": f"seen-{e}", "properties": {"n": i}}
         for i, e in enumerate(emails[start : start + BATCH], start=start)]
        for start in range(0, n, BATCH)
    ]  # fmt: skip

    async def post(events: list[dict[str, object]]) -> None:
        response = await http.post("/api/track/batch", json={"events": events})
        assert response.status_code in (200, 202), response.text
        assert response.json()["accepted"] == len(events), response.text

    engine = make_engine(stack.sqlite_url)
    signalled = (
        select(func.count())
        .select_from(TrackedEvent)
        .where(col(TrackedEvent.name) == "bench.seen", col(TrackedEvent.signalled).is_(True))
    )

    async def all_signalled() -> bool:
        with engine.connect() as conn:
            return conn.execute(signalled).scalar_one() >= n

    begun = time.monotonic()
    await gather_limited(4, [lambda b=b: post(b) for b in batches])
    posted = time.monotonic() - begun
    done = await until(all_signalled, limit=1800, what="every tracked event signalled", every=0.1)
    engine.dispose()
    ours = n / (done - begun)
    await wait_quiet(drip_pids(stack))

    rates = {}
    sample = sleepers[: max(100, n // 20)]
    for concurrency in (16, 32, 64):
        start = time.monotonic()
        await _ping(client, sample, concurrency)
        rates[concurrency] = len(sample) / (time.monotonic() - start)
    best = max(rates, key=lambda c: rates[c])
    await wait_quiet(drip_pids(stack))
    start = time.monotonic()
    await _ping(client, sleepers[:n], best)
    raw = n / (time.monotonic() - start)
    ratio = ours / raw
    table.add(
        f"tracked events: {n:,} in batches of {BATCH}, stored and signalled",
        f"{ours:.0f} events/s (all posted in {posted:.1f} s)",
        f"{raw:.0f} signals/s ({n:,} workflows, {best} concurrent)",
        f"{ratio:.2f}x",
        ">= 0.7x",
        ratio >= 0.7,
    )


async def _ping(client: Client, workflow_ids: list[str], concurrency: int) -> None:
    await gather_limited(
        concurrency,
        [
            lambda w=w: client.get_workflow_handle(w).signal(RawSleep.ping, uuid.uuid4().hex)
            for w in workflow_ids
        ],
    )
