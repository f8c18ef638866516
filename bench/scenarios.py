"""Each measurement, drip beside the same thing done with raw Temporal on the same server."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import case, func, insert, select, text
from sqlalchemy.engine import Engine
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy

from bench.load import load_campaign
from bench.measure import Table, cpu_seconds, ms, percentile, rss_mb, until, wait_quiet
from bench.raw_workflows import RAW_TASK_QUEUE, RawSends, RawSleep, RawSteps
from bench.stack import Stack, create_postgres
from domain.journey import TASK_QUEUE
from storage.db import make_engine
from storage.models import Delivery, Enrollment, Event
from workflows.recipient import RecipientWorkflow

SECOND_IN_HOURS = 1 / 3600
YEAR_IN_HOURS = 8760


@dataclass
class Sizes:
    enroll: int = 10_000
    send: int = 1_000
    events: int = 10_000
    latency_samples: int = 100
    fanout: int = 1_000
    stats_sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    stats_samples: int = 60
    versions: int = 100_000  # running journeys one publish switches

    @classmethod
    def quick(cls) -> Sizes:
        return cls(1_000, 200, 1_000, 20, 200, (1_000, 10_000), 30, 10_000)


@dataclass
class State:
    """What one scenario leaves for the next: the sleeping journeys and raw sleepers."""

    enroll_campaign: int | None = None
    journey_ids: list[tuple[int, str, str]] | None = None  # (enrollment id, email, workflow id)
    raw_sleepers: list[str] | None = None
    raw_rate: float | None = None  # sending's baselines, for the variants' ratios
    raw_send_rate: float | None = None


# --- helpers ---------------------------------------------------------------------------------


async def make_campaign(http: httpx.AsyncClient, delays_hours: list[float], name: str) -> int:
    template = await http.post(
        "/api/templates",
        json={"name": name, "html": '<p>Hi {{ email }}</p><a href="https://example.com/a">a</a>'},
    )
    template_id = template.json()["id"]
    steps = [
        {"subject": f"{name} {n}", "delay_hours": d, "template_id": template_id}
        for n, d in enumerate(delays_hours, start=1)
    ]
    created = await http.post("/api/campaigns", json={"name": name, "steps": steps})
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    activated = await http.patch(f"/api/campaigns/{cid}", json={"status": "active"})
    assert activated.status_code == 200, activated.text
    return cid


async def count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def drained(client: Client, queue: str) -> float:
    """The monotonic time a workflow task queue's backlog was first seen empty twice running:
    every workflow started on it has had its first task."""
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        report_stats=True,
    )
    empty = 0

    async def twice_empty() -> bool:
        nonlocal empty
        stats = (await client.workflow_service.describe_task_queue(request)).stats
        empty = empty + 1 if stats.approximate_backlog_count == 0 else 0
        return empty >= 2

    return await until(twice_empty, limit=3600, what=f"{queue} to drain", every=0.25)


async def gather_limited(limit: int, calls: list[Any]) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Any) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


async def raw_starts(client: Client, prefix: str, n: int, concurrency: int) -> float:
    """Start n RawSleep workflows; seconds until the server accepted the last."""
    start = time.monotonic()
    await gather_limited(
        concurrency,
        [
            lambda i=i: client.start_workflow(
                RawSleep.run,
                id=f"{prefix}-{i}",
                task_queue=RAW_TASK_QUEUE,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
            for i in range(n)
        ],
    )
    return time.monotonic() - start


def drip_pids(stack: Stack) -> list[int]:
    names = ["temporal", "raw-worker", *(n for n in stack.processes if n.startswith("worker"))]
    alive = [stack.processes[n] for n in names]
    return [p.pid for p in alive if p.popen is not None and p.popen.poll() is None]


# --- enrollment --------------------------------------------------------------------------------


async def enrollment(stack: Stack, table: Table, sizes: Sizes, state: State) -> None:
    client, n = stack.client, sizes.enroll
    assert client is not None
    print(f"enrollment: {n:,} recipients", flush=True)
    # Raw: find the best start concurrency on a sample, then start n at it.
    sample, rates, probes = max(200, n // 20), {}, 0
    for concurrency in (8, 16, 32, 64):
        seconds = await raw_starts(client, f"probe{concurrency}", sample, concurrency)
        rates[concurrency], probes = sample / seconds, probes + sample
    best = max(rates, key=lambda c: rates[c])
    await wait_quiet(drip_pids(stack))
    begun = time.monotonic()
    await raw_starts(client, "raw-sleep", n, best)
    raw_done = await until(
        lambda: _eq(
            count(client, 'WorkflowType = "RawSleep" AND ExecutionStatus = "Running"'), n + probes
        ),
        limit=1800,
        what="raw starts to show as Running",
        every=0.25,
    )
    raw_seconds = raw_done - begun
    raw_drained = await drained(client, RAW_TASK_QUEUE) - begun
    state.raw_sleepers = [f"raw-sleep-{i}" for i in range(n)]
    await wait_quiet(drip_pids(stack))

    http = httpx.AsyncClient(base_url=stack.api_urls["sqlite"], timeout=600)
    cid = await make_campaign(http, [YEAR_IN_HOURS], "enroll")
    recipients = [{"email": f"e{i}@enroll.bench.example"} for i in range(n)]
    begun = time.monotonic()
    response = await http.post(f"/api/campaigns/{cid}/recipients", json={"recipients": recipients})
    answered = time.monotonic() - begun
    assert response.status_code in (200, 202), response.text
    running = f'CampaignId = {cid} AND ExecutionStatus = "Running"'
    ours_done = await until(
        lambda: _eq(count(client, running), n),
        limit=1800,
        what="journeys to show as Running",
        every=0.25,
    )
    ours_seconds = ours_done - begun
    ours_drained = await drained(client, TASK_QUEUE) - begun
    await http.aclose()
    ratio = ours_seconds / raw_seconds
    table.add(
        f"enrollment of {n:,} by one API call, until all Running",
        f"{ours_seconds:.1f} s ({n / ours_seconds:.0f}/s; answered {ms(answered)})",
        f"{raw_seconds:.1f} s ({n / raw_seconds:.0f}/s; start_workflow x{n:,}, {best} at once)",
        f"{ratio:.2f}x time",
        "<= 1.1x",
        ratio <= 1.1,
    )
    table.add(
        f"enrollment of {n:,}: until every journey ran its first task",
        f"{ours_drained:.1f} s ({n / ours_drained:.0f}/s; first timer set)",
        f"{raw_drained:.1f} s ({n / raw_drained:.0f}/s; first timer set)",
        f"{ours_drained / raw_drained:.2f}x time",
    )
    table.notes.append(
        "start rates by concurrency (raw, sample of "
        f"{sample}): " + ", ".join(f"{c}: {r:.0f}/s" for c, r in rates.items())
    )
    state.enroll_campaign = cid
    engine = make_engine(stack.sqlite_url)
    with engine.connect() as conn:
        state.journey_ids = [
            (i, e, w)
            for i, e, w in conn.execute(
                select(Enrollment.id, Enrollment.email, Enrollment.workflow_id)
                .where(Enrollment.campaign_id == cid)
                .order_by(Enrollment.id)
            )
        ]
    engine.dispose()
    quiet = await wait_quiet(drip_pids(stack))
    worker_now, worker_peak = rss_mb(stack.processes["worker"].pid)
    raw_now, raw_peak = rss_mb(stack.processes["raw-worker"].pid)
    table.add(
        f"worker RSS with {n:,} sleeping journeys",
        f"{worker_now:.0f} MB (peak {worker_peak:.0f} MB)",
        f"{raw_now:.0f} MB (peak {raw_peak:.0f} MB) with {n + probes:,} raw sleepers",
        "",
        "< 400 MB",
        worker_peak < 400,
    )
    table.notes.append(f"after enrollment the worker took {quiet:.0f} s to go quiet")


async def _eq(value: Any, expected: int) -> bool:
    return (await value) >= expected


# --- first send --------------------------------------------------------------------------------


async def first_send(stack: Stack, table: Table, sizes: Sizes, state: State) -> None:
    print(f"first-send latency: {sizes.latency_samples} enrollments one at a time", flush=True)
    http = httpx.AsyncClient(base_url=stack.api_urls["sqlite"], timeout=60)
    cid = await make_campaign(http, [0], "first")
    latencies = []
    for i in range(sizes.latency_samples):
        email = f"f{i}@first.bench.example"
        posted = time.time()
        response = await http.post(
            f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": email}]}
        )
        assert response.status_code == 200, response.text

        async def arrived(email: str = email) -> bool:
            return bool(stack.sink.arrivals.get(email))

        await until(arrived, limit=60, what=f"{email} to arrive", every=0.005)
        latencies.append(stack.sink.arrivals[email][0] - posted)
    await http.aclose()
    table.add(
        "first-send latency, enrollment -> SMTP receipt (delay 0)",
        f"p50 {ms(percentile(latencies, 50))}, p99 {ms(percentile(latencies, 99))}",
    )


# --- sending -----------------------------------------------------------------------------------


async def _timed_raw(stack: Stack, workflow: Any, n: int, args: Any, done_when: Any) -> float:
    """Start n raw workflows (16 at a time, as drip's synchronous enrollment does); seconds
    until `done_when` says they finished."""
    client = stack.client
    assert client is not None
    begun = time.monotonic()
    await gather_limited(
        16,
        [
            lambda i=i: client.start_workflow(
                workflow, args=args(i), id=f"{workflow.__name__}-{i}", task_queue=RAW_TASK_QUEUE
            )
            for i in range(n)
        ],
    )
    return await until(done_when, limit=1800, what=f"{workflow.__name__} to finish") - begun


def cpu_by_role(stack: Stack) -> dict[str, float]:
    """CPU seconds so far of the server, drip's workers, the baseline worker and the APIs."""
    roles: dict[str, float] = {"server": 0.0, "worker": 0.0, "raw": 0.0, "api": 0.0}
    for name, process in stack.processes.items():
        if process.popen is None or process.popen.poll() is not None:
            continue
        role = {"temporal": "server", "raw-worker": "raw"}.get(name, name.split("-")[0])
        roles[role] = roles.get(role, 0.0) + cpu_seconds(process.pid)
    return roles


def per_message(
    before: dict[str, float], after: dict[str, float], messages: int, *roles: str
) -> str:
    parts = [f"{r} {(after[r] - before[r]) / messages * 1000:.1f}" for r in roles]
    return "CPU/msg ms: " + ", ".join(parts)


async def sending(stack: Stack, table: Table, sizes: Sizes, state: State) -> None:
    """Drip's sends beside two baselines: a no-op activity per step, and a raw activity that
    sends the same pre-built message to the same sink over a kept connection."""
    client, n = stack.client, sizes.send
    assert client is not None
    messages = n * len(SEND_DELAYS)
    print(
        f"sending: {n:,} recipients x {len(SEND_DELAYS)} steps (delays {SEND_DELAYS} s)", flush=True
    )
    await wait_quiet(drip_pids(stack))
    cpu = cpu_by_role(stack)
    completed = 'WorkflowType = "RawSteps" AND ExecutionStatus = "Completed"'
    raw_seconds = await _timed_raw(
        stack, RawSteps, n, lambda i: [SEND_DELAYS], lambda: _eq(count(client, completed), n)
    )
    raw_rate, raw_cpu = (
        messages / raw_seconds,
        per_message(cpu, cpu_by_role(stack), messages, "server", "raw"),
    )
    await wait_quiet(drip_pids(stack))
    cpu = cpu_by_role(stack)

    async def raw_received() -> bool:
        return stack.sink.received("rawsend") >= messages

    send_seconds = await _timed_raw(
        stack, RawSends, n, lambda i: [SEND_DELAYS, f"rawsend{i}@bench.example"], raw_received
    )
    send_rate = messages / send_seconds
    send_cpu = per_message(cpu, cpu_by_role(stack), messages, "server", "raw")
    state.raw_rate, state.raw_send_rate = raw_rate, send_rate
    ours_rate, ours_cpu = await _drip_sends(stack, n, "s")
    ratio, send_ratio = ours_rate / raw_rate, ours_rate / send_rate
    table.add(
        f"sending {n:,} recipients x 3 steps ({messages:,} messages)",
        f"{ours_rate:.1f} messages/s received; {ours_cpu}",
        f"{raw_rate:.1f} no-op activities/s; {raw_cpu}",
        f"{ratio:.2f}x",
        ">= 0.7x",
        ratio >= 0.7,
    )
    table.add(
        "sending, against the raw-send baseline (same message, same sink, kept connection)",
        f"{ours_rate:.1f} messages/s",
        f"{send_rate:.1f} raw sends/s; {send_cpu}",
        f"{send_ratio:.2f}x",
        ">= 0.85x",
        send_ratio >= 0.85,
    )
    await asyncio.to_thread(point_of_no_return_cost, stack, table, "s")


SEND_DELAYS = [0.0, 2.0, 2.0]


async def _drip_sends(stack: Stack, n: int, prefix: str, api: str = "sqlite") -> tuple[float, str]:
    """One campaign of n recipients x SEND_DELAYS through the API: messages/s at the sink."""
    messages = n * len(SEND_DELAYS)
    await wait_quiet(drip_pids(stack))
    http = httpx.AsyncClient(base_url=stack.api_urls[api], timeout=600)
    cid = await make_campaign(http, [d * SECOND_IN_HOURS for d in SEND_DELAYS], f"send-{prefix}")
    recipients = [{"email": f"{prefix}{i}@send.bench.example"} for i in range(n)]
    cpu = cpu_by_role(stack)
    begun = time.monotonic()
    response = await http.post(f"/api/campaigns/{cid}/recipients", json={"recipients": recipients})
    assert response.status_code in (200, 202), response.text

    async def all_received() -> bool:
        return stack.sink.received(prefix) >= messages

    ours_done = await until(all_received, limit=1800, what="every message at the SMTP sink")
    await http.aclose()
    used = per_message(cpu, cpu_by_role(stack), messages, "server", "worker", "api")
    return messages / (ours_done - begun), used


async def _with_worker(stack: Stack, name: str, env: dict[str, str], run: Any) -> Any:
    """Run `run()` with drip's worker replaced by one on these settings, then put it back."""
    main = stack.processes["worker"]
    main.stop()
    extra = stack.spawn(name, [sys.executable, "worker.py"], {**main.env, **env})
    try:
        await wait_quiet(drip_pids(stack))  # started and polling
        return await run()
    finally:
        extra.stop()
        del stack.processes[name]
        main.start()
        await wait_quiet(drip_pids(stack))


async def sending_variants(stack: Stack, table: Table, sizes: Sizes, state: State) -> None:
    """The same campaign with a workflow cache too small to keep the journeys between steps
    (each step replays its history, as journeys days apart do), and on PostgreSQL."""
    n = sizes.send
    raw_rate, send_rate = state.raw_rate, state.raw_send_rate

    def ratios(rate: float) -> str:
        if raw_rate is None or send_rate is None:
            return ""
        return f"{rate / raw_rate:.2f}x no-op, {rate / send_rate:.2f}x raw send"

    print(f"sending, cache of {SMALL_CACHE}: {n:,} recipients", flush=True)
    rate, used = await _with_worker(
        stack, "worker-small-cache", {"DRIP_WORKFLOW_CACHE_SIZE": str(SMALL_CACHE)},
        lambda: _drip_sends(stack, n, "c"),
    )  # fmt: skip
    table.add(
        f"sending, workflow cache of {SMALL_CACHE} (every step replays), {n * 3:,} messages",
        f"{rate:.1f} messages/s; {used}", "(baselines above)", ratios(rate),
    )  # fmt: skip
    url = stack.postgres_url or create_postgres()
    if url is None:
        table.notes.append("PostgreSQL not reachable: no PostgreSQL sending run")
        return
    stack.postgres_url = url
    if "postgresql" not in stack.api_urls:
        await stack.start_api("postgresql", url)
    print(f"sending on PostgreSQL: {n:,} recipients", flush=True)
    rate, used = await _with_worker(
        stack, "worker-postgresql", {"DRIP_DATABASE_URL": url},
        lambda: _drip_sends(stack, n, "p", api="postgresql"),
    )  # fmt: skip
    table.add(
        f"sending, PostgreSQL app database, {n * 3:,} messages",
        f"{rate:.1f} messages/s; {used}", "(baselines above)", ratios(rate),
    )  # fmt: skip


SMALL_CACHE = 20


def point_of_no_return_cost(stack: Stack, table: Table, prefix: str) -> None:
    """What recording the point of no return (activities/sending.py: the row marked
    `handing_over` before the end of DATA is written) costs per message: the very write, on
    the rows just sent, alone and 16 at a time as concurrent sends do. Rows are put back."""
    import concurrent.futures

    from activities.sending import SendingActivities, Status
    from settings import Settings
    from storage.models import utcnow

    engine = make_engine(stack.sqlite_url)
    with engine.begin() as conn:
        ids = [row[0] for row in conn.execute(
            select(Delivery.id).join(Enrollment, Enrollment.id == Delivery.enrollment_id)
            .where(Enrollment.email.like(f"{prefix}%"), Delivery.status == "sent"))]  # fmt: skip
    sender = SendingActivities(Settings(database_url=stack.sqlite_url), engine, None)  # type: ignore[arg-type]
    lease = utcnow()

    def lease_all() -> None:
        with engine.begin() as conn:
            conn.execute(Delivery.__table__.update().where(Delivery.id.in_(ids))  # type: ignore[attr-defined]
                         .values(status=Status.SENDING, send_started_at=lease))  # fmt: skip

    def timed(delivery_id: str) -> float:
        began = time.perf_counter()
        sender._mark_handing_over(delivery_id, lease)
        return time.perf_counter() - began

    lease_all()
    alone = [timed(d) for d in ids]
    lease_all()
    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        waits = list(pool.map(timed, ids))
    wall = time.perf_counter() - began
    with engine.begin() as conn:
        conn.execute(Delivery.__table__.update().where(Delivery.id.in_(ids))  # type: ignore[attr-defined]
                     .values(status=Status.SENT))  # fmt: skip
    sender.close()
    engine.dispose()
    table.add(
        f"recording the point of no return (one row UPDATE + COMMIT before the end of DATA), "
        f"SQLite, {len(ids):,} messages",
        f"alone: p50 {ms(percentile(alone, 50))}, p99 {ms(percentile(alone, 99))}; "
        f"16 at a time: {wall / len(ids) * 1000:.2f} ms/message of the write lock, "
        f"wait p50 {ms(percentile(waits, 50))}, p99 {ms(percentile(waits, 99))}",
        "",
        "",
        "",
        None,
    )


# --- events ------------------------------------------------------------------------------------


def _sign(key: ec.EllipticCurvePrivateKey, body: bytes) -> dict[str, str]:
    import base64

    timestamp = str(int(time.time()))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "content-type": "application/json",
        "x-twilio-email-event-webhook-signature": base64.b64encode(signature).decode(),
        "x-twilio-email-event-webhook-timestamp": timestamp,
    }


def _sendgrid_event(kind: str, email: str, delivery_id: str, url: str | None = None) -> dict:  # type: ignore[type-arg]
    event = {
        "event": kind,
        "email": email,
        "timestamp": int(time.time()),
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": uuid.uuid4().hex,
        "drip_delivery_id": delivery_id,
        "useragent": "Mozilla/5.0",
    }
    if url:
        event["url"] = url
    return event


async def events(stack: Stack, table: Table, sizes: Sizes, state: State) -> None:
    client, n = stack.client, sizes.events
    assert client is not None and state.journey_ids and state.raw_sleepers
    journeys = state.journey_ids[:n]
    n = len(journeys)
    print(f"event ingest: {n:,} opens and clicks in SendGrid batches of 500", flush=True)
    # The sleeping journeys have sent nothing: give each a delivery of step 1, as a send would.
    engine = make_engine(stack.sqlite_url)
    with engine.begin() as conn:
        step_id = conn.execute(
            text(f"SELECT id FROM step WHERE campaign_id = {state.enroll_campaign}")
        ).scalar()
        conn.execute(
            insert(Delivery),
            [
                dict(
                    id=f"snd_bench_{i}",
                    enrollment_id=i,
                    campaign_id=state.enroll_campaign,
                    step_id=step_id,
                    step_order=1,
                    decision="sent",
                    status="sent",
                    links=[],
                )
                for i, _, _ in journeys
            ],
        )
    batches = []
    for start in range(0, n, 500):
        batch = [
            _sendgrid_event("open", email, f"snd_bench_{i}")
            if k % 2 == 0
            else _sendgrid_event("click", email, f"snd_bench_{i}", "https://example.com/a")
            for k, (i, email, _) in enumerate(journeys[start : start + 500], start=start)
        ]
        batches.append(json.dumps(batch).encode())
    http = httpx.AsyncClient(base_url=stack.api_urls["sqlite"], timeout=600)
    webhook = "/api/webhooks/sendgrid"
    probe = await http.post(webhook, content=b"[]", headers=_sign(stack.sendgrid_key, b"[]"))
    via = "SendGrid webhook"
    if probe.status_code == 404:  # the webhook route is not there: the same events, one by one
        via = "POST /api/events (no SendGrid route)"
    await wait_quiet(drip_pids(stack))

    async def post(body: bytes) -> None:
        if via.startswith("SendGrid"):
            response = await http.post(
                webhook, content=body, headers=_sign(stack.sendgrid_key, body)
            )
            assert response.status_code == 200, response.text
            return
        for event in json.loads(body):
            response = await http.post(
                "/api/events",
                json={
                    "delivery_id": event["drip_delivery_id"],
                    "type": event["event"],
                    "url": event.get("url"),
                    "event_id": event["sg_event_id"],
                },
            )
            assert response.status_code == 202, response.text

    begun = time.monotonic()
    await gather_limited(4, [lambda b=b: post(b) for b in batches])
    posted = time.monotonic() - begun
    signalled = (
        select(func.count())
        .select_from(Event)
        .where(
            Event.campaign_id == state.enroll_campaign,
            Event.signalled.is_(True),  # type: ignore[attr-defined]
        )
    )

    async def all_signalled() -> bool:
        with engine.connect() as conn:
            return conn.execute(signalled).scalar_one() >= n

    ours_done = await until(all_signalled, limit=1800, what="every event signalled", every=0.1)
    ours_rate = n / (ours_done - begun)
    await wait_quiet(drip_pids(stack))

    raw_rates = {}
    for concurrency in (16, 32, 64):
        sample = state.raw_sleepers[: max(100, n // 20)]
        start = time.monotonic()
        await _raw_signals(client, sample, concurrency)
        raw_rates[concurrency] = len(sample) / (time.monotonic() - start)
    best = max(raw_rates, key=lambda c: raw_rates[c])
    await wait_quiet(drip_pids(stack))
    targets = state.raw_sleepers[:n]
    start = time.monotonic()
    await _raw_signals(client, targets, best)
    raw_rate = n / (time.monotonic() - start)
    ratio = ours_rate / raw_rate
    table.add(
        f"event ingest: {n:,} opens/clicks, {via}, batches of 500",
        f"{ours_rate:.0f} events/s stored and signalled (all posted in {posted:.1f} s)",
        f"{raw_rate:.0f} signals/s ({n:,} workflows, {best} concurrent)",
        f"{ratio:.2f}x",
        ">= 0.7x",
        ratio >= 0.7,
    )
    await wait_quiet(drip_pids(stack))

    # Webhook to workflow: one event at a time, until the journey's progress query shows it.
    samples = sizes.latency_samples
    ours, raw = [], []
    for k in range(samples):
        i, email, workflow_id = journeys[(k * 7919) % n]
        handle = client.get_workflow_handle_for(RecipientWorkflow.run, workflow_id)
        before = (await handle.query(RecipientWorkflow.progress)).events_counted
        body = json.dumps(
            [_sendgrid_event("click", email, f"snd_bench_{i}", f"https://example.com/l{k}")]
        ).encode()
        posted_at = time.monotonic()
        if via.startswith("SendGrid"):
            await http.post(webhook, content=body, headers=_sign(stack.sendgrid_key, body))
        else:
            await post(body)

        async def seen(handle=handle, before=before) -> bool:  # type: ignore[no-untyped-def]
            return (await handle.query(RecipientWorkflow.progress)).events_counted > before

        ours.append(
            await until(seen, limit=60, what="the journey to see the event", every=0.01) - posted_at
        )
        sleeper = client.get_workflow_handle(targets[(k * 7919) % n])
        pings = await sleeper.query(RawSleep.pings)
        signalled_at = time.monotonic()
        await sleeper.signal(RawSleep.ping, f"l{k}")

        async def pinged(sleeper=sleeper, pings=pings) -> bool:  # type: ignore[no-untyped-def]
            return await sleeper.query(RawSleep.pings) > pings

        raw.append(await until(pinged, limit=60, what="the raw signal", every=0.01) - signalled_at)
    await http.aclose()
    p50 = percentile(ours, 50)
    table.add(
        "webhook -> workflow latency (posted -> progress query shows it)",
        f"p50 {ms(p50)}, p99 {ms(percentile(ours, 99))}",
        f"signal -> query shows it: p50 {ms(percentile(raw, 50))}, p99 {ms(percentile(raw, 99))}",
        "",
        "p50 < 250 ms",
        p50 < 0.25,
    )
    engine.dispose()


async def _raw_signals(client: Client, workflow_ids: list[str], concurrency: int) -> None:
    await gather_limited(
        concurrency,
        [
            lambda w=w: client.get_workflow_handle(w).signal(RawSleep.ping, uuid.uuid4().hex)
            for w in workflow_ids
        ],
    )


# --- fan-out -----------------------------------------------------------------------------------


async def fanout(stack: Stack, table: Table, sizes: Sizes, state: State) -> None:
    client = stack.client
    assert client is not None and state.journey_ids
    ids = [w for _, _, w in state.journey_ids[: sizes.fanout]]
    print(f"fan-out: one progress query per journey, {len(ids):,} journeys", flush=True)
    await wait_quiet(drip_pids(stack))
    start = time.monotonic()
    for workflow_id in ids:
        await client.get_workflow_handle_for(RecipientWorkflow.run, workflow_id).query(
            RecipientWorkflow.progress
        )
    sequential = time.monotonic() - start
    start = time.monotonic()
    await gather_limited(
        16,
        [
            lambda w=w: client.get_workflow_handle_for(RecipientWorkflow.run, w).query(
                RecipientWorkflow.progress
            )
            for w in ids
        ],
    )
    parallel = time.monotonic() - start
    state.fanout_seconds = sequential  # type: ignore[attr-defined]
    table.add(
        f"stats by querying each workflow instead, {len(ids):,} journeys",
        f"{sequential:.1f} s one by one, {parallel:.1f} s 16 at a time",
        "(what the counters below avoid)",
    )


# --- history -----------------------------------------------------------------------------------


async def history(stack: Stack, table: Table, sizes: Sizes, state: State) -> None:
    client = stack.client
    assert client is not None
    print("history events per journey: a 5-step campaign", flush=True)
    http = httpx.AsyncClient(base_url=stack.api_urls["sqlite"], timeout=60)
    cid = await make_campaign(http, [0] * 5, "history")
    await http.post(
        f"/api/campaigns/{cid}/recipients",
        json={"recipients": [{"email": "h@history.bench.example"}]},
    )
    await http.aclose()
    done = f'CampaignId = {cid} AND ExecutionStatus = "Completed"'
    await until(lambda: _eq(count(client, done), 1), limit=120, what="the 5-step journey")
    ours = [w async for w in client.list_workflows(done)][0]
    ours_events, ours_bytes = await _history_size(client, ours.id)
    raw_id = f"raw-history-{uuid.uuid4().hex[:8]}"
    assert (
        await client.execute_workflow(RawSteps.run, [0.0] * 5, id=raw_id, task_queue=RAW_TASK_QUEUE)
        == 5
    )
    raw_events, raw_bytes = await _history_size(client, raw_id)
    table.add(
        "Temporal history per journey, 5 steps",
        f"{ours_events} events, {ours_bytes / 1024:.1f} KiB",
        f"{raw_events} events, {raw_bytes / 1024:.1f} KiB (5 no-op activities)",
        f"{ours_events / raw_events:.2f}x",
    )


async def _history_size(client: Client, workflow_id: str) -> tuple[int, int]:
    events = [e async for e in client.get_workflow_handle(workflow_id).fetch_history_events()]
    return len(events), sum(e.ByteSize() for e in events)


# --- stats and funnel --------------------------------------------------------------------------


def _row_aggregate(engine: Engine, cid: int) -> float:
    """Median time of the stats as one aggregate over the enrollment rows (before counters)."""
    query = select(
        func.count(),
        func.count(case((Enrollment.status == "completed", 1))),
        func.count(Enrollment.opened_at),
        func.count(Enrollment.clicked_at),
    ).where(Enrollment.campaign_id == cid)
    times = []
    with engine.connect() as conn:
        for _ in range(7):
            start = time.monotonic()
            conn.execute(query).one()
            times.append(time.monotonic() - start)
    return percentile(times, 50)


async def stats(stack: Stack, table: Table, sizes: Sizes, state: State, postgres: bool) -> None:
    databases = [("sqlite", stack.sqlite_url)]
    if postgres:
        url = create_postgres()
        if url is None:
            table.notes.append("PostgreSQL not reachable: stats and funnel measured on SQLite only")
        else:
            stack.postgres_url = url
            await stack.start_api("postgresql", url)
            databases.append(("postgresql", url))
    for label, url in databases:
        engine = make_engine(url)
        http = httpx.AsyncClient(base_url=stack.api_urls[label], timeout=60)
        for size in sizes.stats_sizes:
            print(f"stats and funnel: {size:,} recipients on {label} (loading...)", flush=True)
            started = time.monotonic()
            cid = await asyncio.to_thread(load_campaign, engine, size)
            loaded = time.monotonic() - started
            figures = {}
            for name, path, params in (
                ("stats", "/api/campaigns/stats", {"campaign_id": cid}),
                ("funnel", f"/api/campaigns/{cid}/funnel", None),
            ):
                times = []
                for k in range(sizes.stats_samples + 5):
                    start = time.monotonic()
                    response = await http.get(path, params=params)
                    elapsed = time.monotonic() - start
                    assert response.status_code == 200, response.text
                    if k >= 5:  # after warm-up
                        times.append(elapsed)
                figures[name] = (percentile(times, 50), percentile(times, 99))
            recipients = (
                await http.get("/api/campaigns/stats", params={"campaign_id": cid})
            ).json()["recipients"]
            assert recipients == size, (recipients, size)
            aggregate = _row_aggregate(engine, cid)
            for name, (p50, p99) in figures.items():
                table.add(
                    f"{name} latency, {size:,} recipients, {label}",
                    f"p50 {ms(p50)}, p99 {ms(p99)}",
                    f"(row aggregate: {ms(aggregate)})" if name == "stats" else "",
                    "",
                    "p50 < 50 ms" if size == 100_000 else "",
                    p50 < 0.05 if size == 100_000 else None,
                )
            table.notes.append(f"bulk-loaded {size:,} recipients on {label} in {loaded:.0f} s")
        await http.aclose()
        engine.dispose()
