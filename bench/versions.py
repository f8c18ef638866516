"""Publishing a new version to many running journeys (`make bench`, scenario `versions`):
`--versions` journeys (100,000) sleep before step 1 of a 3-step campaign; a version that edits
step 1, removes step 2 and adds step 4 is previewed (dry run), then published with `migrate`.
Measured: the preview's answer and its `in_flight`, the publish's answer, and the time until
every journey runs on the new version (`CampaignVersion` = 2, none lost), beside a raw batch
signal to raw sleepers on the same server in the same run."""

from __future__ import annotations

import time
import uuid

import httpx
from temporalio.api.batch.v1 import BatchOperationSignal
from temporalio.api.common.v1 import Payloads
from temporalio.api.enums.v1 import BatchOperationState
from temporalio.api.workflowservice.v1 import (
    DescribeBatchOperationRequest,
    StartBatchOperationRequest,
)
from temporalio.client import Client

from bench.journeys import enroll_all
from bench.measure import Table, cpu_seconds, ms, rss_mb, until, wait_quiet
from bench.raw_workflows import RAW_TASK_QUEUE, RawSleep
from bench.scenarios import YEAR_IN_HOURS, Sizes, State, count, drained, drip_pids, raw_starts
from bench.stack import Stack
from domain.journey import TASK_QUEUE


async def run(stack: Stack, table: Table, sizes: Sizes, state: State) -> None:  # noqa: ARG001
    client, n = stack.client, sizes.versions
    assert client is not None
    print(f"versions: {n:,} running journeys switched by one publish (migrate)", flush=True)
    async with httpx.AsyncClient(base_url=stack.api_urls["sqlite"], timeout=600) as http:
        cid, ids, template = await _campaign(http)
        emails = [f"v{i}@versions.bench.example" for i in range(n)]
        begun = time.monotonic()
        await enroll_all(client, http, cid, emails)
        enrolled = time.monotonic() - begun
        await drained(client, TASK_QUEUE)
        await wait_quiet(drip_pids(stack))

        base = f"/api/campaigns/{cid}/versions"
        number = (await http.post(base)).json()["version"]
        steps = [
            {"id": ids[0], "subject": "V2 one", "delay_hours": YEAR_IN_HOURS,
             "template_id": template},
            {"id": ids[2], "subject": "Three", "delay_hours": 24, "template_id": template},
            {"subject": "Four", "delay_hours": 24, "template_id": template},
        ]  # fmt: skip
        replaced = await http.put(f"{base}/{number}", json={"steps": steps})
        assert replaced.status_code == 200, replaced.text
        publish = f"{base}/{number}/publish"
        start = time.monotonic()
        preview = await http.post(publish, json={"policy": "migrate", "dry_run": True})
        previewed = time.monotonic() - start
        assert preview.status_code == 200, preview.text
        impact = preview.json()
        assert impact["in_flight"] == n, impact

        worker = stack.processes["worker"].pid
        cpu = {p: cpu_seconds(p) for p in drip_pids(stack)}
        start = time.monotonic()
        published = await http.post(publish, json={"policy": "migrate"})
        answered = time.monotonic() - start
        assert published.status_code == 200, published.text
    switched_query = f"CampaignId = {cid} AND CampaignVersion = {number}"
    running = f'CampaignId = {cid} AND ExecutionStatus = "Running"'

    async def all_switched() -> bool:
        return await count(client, switched_query) >= n

    done = await until(all_switched, limit=7200, what="every journey on the new version", every=2)
    switch_seconds = done - start
    server_cpu = sum(cpu_seconds(p) - c for p, c in cpu.items() if p != worker)
    worker_cpu = cpu_seconds(worker) - cpu[worker]
    still_running = await count(client, running)
    rss, peak = rss_mb(worker)
    await wait_quiet(drip_pids(stack))

    raw_n = max(1_000, n // 10)
    raw_rate = await _raw_batch_signal(client, raw_n)
    ours = n / switch_seconds
    table.add(
        f"publish (migrate) to {n:,} running journeys, until every one is on the new version",
        f"{switch_seconds:.0f} s ({ours:.0f} journeys/s; publish answered {ms(answered)}, "
        f"preview {ms(previewed)}, in_flight {impact['in_flight']:,}); CPU per journey: "
        f"server+raw {server_cpu / n * 1000:.1f} ms, worker {worker_cpu / n * 1000:.1f} ms; "
        f"{still_running:,} still running, worker RSS {rss:.0f} MB (peak {peak:.0f})",
        f"{raw_rate:.0f} raw batch signals/s ({raw_n:,} raw sleepers, one batch operation)",
        f"{ours / raw_rate:.2f}x",
        f"all {n:,} switched, none lost",
        still_running == n,
    )
    table.notes.append(
        f"versions: {n:,} journeys enrolled and at their first timer in {enrolled:.0f} s"
    )


async def _campaign(http: httpx.AsyncClient) -> tuple[int, list[int], int]:
    """An active 3-step campaign whose first step is due in a year: every journey sleeps."""
    template = (await http.post("/api/templates", json={"name": "v", "html": "<p>Hi</p>"})).json()
    steps = [
        {"subject": "One", "delay_hours": YEAR_IN_HOURS, "template_id": template["id"]},
        {"subject": "Two", "delay_hours": 24, "template_id": template["id"]},
        {"subject": "Three", "delay_hours": 24, "template_id": template["id"]},
    ]
    created = await http.post("/api/campaigns", json={"name": "versions", "steps": steps})
    assert created.status_code == 201, created.text
    body = created.json()
    activated = await http.patch(f"/api/campaigns/{body['id']}", json={"status": "active"})
    assert activated.status_code == 200, activated.text
    return body["id"], [s["id"] for s in body["steps"]], template["id"]


async def _raw_batch_signal(client: Client, n: int) -> float:
    """Signals/s of one batch signal operation to n raw sleepers, until the server reports it
    completed (every signal delivered)."""
    prefix = f"raw-version-{uuid.uuid4().hex[:6]}"
    await raw_starts(client, prefix, n, 64)
    await drained(client, RAW_TASK_QUEUE)
    payloads = await client.data_converter.encode(["published"])
    job = f"raw-batch-{uuid.uuid4()}"
    request = StartBatchOperationRequest(
        namespace=client.namespace,
        job_id=job,
        reason="bench",
        visibility_query=f'WorkflowId STARTS_WITH "{prefix}-" AND ExecutionStatus = "Running"',
        signal_operation=BatchOperationSignal(
            signal=RawSleep.ping.__name__, input=Payloads(payloads=payloads)
        ),
    )
    start = time.monotonic()
    await client.workflow_service.start_batch_operation(request)
    describe = DescribeBatchOperationRequest(namespace=client.namespace, job_id=job)

    async def completed() -> bool:
        answer = await client.workflow_service.describe_batch_operation(describe)
        if answer.state == BatchOperationState.BATCH_OPERATION_STATE_FAILED:
            raise RuntimeError(f"raw batch signal failed: {answer}")
        return answer.state == BatchOperationState.BATCH_OPERATION_STATE_COMPLETED

    done = await until(completed, limit=7200, what="the raw batch signal", every=1)
    return n / (done - start)
