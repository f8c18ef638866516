"""Large enrollments: a JSON call over the synchronous limit or a CSV import is stored, answered
202 at once, and a batch workflow enrolls every row once and starts its journey, even across
a worker crash. Real API over HTTP, real Temporal dev server, SQLite and PostgreSQL.

The batch tests run only the batch worker: the journeys they start stay pending on the test's own
task queue (that the server has them is what count_workflows shows); nothing else polls it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

import activities.enrollment_batch
from domain.enrollment import batch_workflow_id
from domain.journey import RecipientInput, workflow_id
from settings import Settings
from storage.db import make_engine
from storage.models import Enrollment, EnrollmentBatch
from tests.api.test_observability import sample, scrape
from tests.conftest import unique_domain
from tests.support.eventually import eventually
from tests.support.factories import error_locs, make_campaign, make_template
from worker import build_batch_worker

# The bench (`make bench`) enrolls 10,000 in one call and times it (docs/performance.md); here
# 1,500 and 600 with small chunks prove the same paths (several chunk activities) quicker.
LARGE = 1_500
CRASH_BATCH = 600
CHUNK_ROWS = 500


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(activities.enrollment_batch, "CHUNK_ROWS", CHUNK_ROWS)


@contextlib.asynccontextmanager
async def batch_worker(settings: Settings, client: Client) -> AsyncIterator[None]:
    """Only the enrollment-batch worker of worker.py: batches run, journeys stay pending."""
    engine = make_engine(settings.database_url)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as executor:
        worker = build_batch_worker(client, settings, engine, executor)
        task = asyncio.create_task(worker.run())
        try:
            yield
        finally:
            await worker.shutdown()
            await asyncio.gather(task, return_exceptions=True)
            engine.dispose()


async def journeys_of(client: Client, campaign_id: int, prefix: str) -> int:
    query = f'CampaignId = {campaign_id} AND RecipientEmail STARTS_WITH "{prefix}"'
    return (await client.count_workflows(query)).count


async def pinned_step_ids(client: Client, campaign_id: int, email: str) -> list[int] | None:
    """The step ids of the plan a journey was started with (None: it loads its plan itself)."""
    handle = client.get_workflow_handle(workflow_id(campaign_id, email))
    started = (await handle.fetch_history()).events[0]
    [payload] = started.workflow_execution_started_event_attributes.input.payloads
    journey = client.data_converter.payload_converter.from_payload(payload, RecipientInput)
    return [s.step_id for s in journey.plan.steps] if journey.plan else None


async def step_ids(api: httpx.AsyncClient, campaign_id: int) -> list[int]:
    steps = (await api.get("/api/campaigns/steps", params={"campaign_id": campaign_id})).json()
    return [s["id"] for s in steps]


async def finished_batch(api: httpx.AsyncClient, batch_id: int, timeout: float) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        body = (await api.get(f"/api/enrollment-batches/{batch_id}")).json()
        return body if body["status"] in ("completed", "cancelled") else None

    return await eventually(done, timeout=timeout, what=f"batch {batch_id} to finish")


def enrollment_rows(engine: Engine, campaign_id: int) -> tuple[int, int, int]:
    """(rows, distinct addresses, rows whose journey is marked started)"""
    with Session(engine) as session:
        return session.exec(
            select(
                func.count(),
                func.count(func.distinct(Enrollment.email)),
                func.count().filter(col(Enrollment.workflow_started).is_(True)),
            ).where(Enrollment.campaign_id == campaign_id)
        ).one()


async def sleeping_campaign(api: httpx.AsyncClient) -> int:
    template = await make_template(api)
    step = {"subject": "Hello {{ first_name }}", "delay_hours": 8760, "template_id": template}
    return (await make_campaign(api, [step]))["id"]


async def test_enroll_call_over_the_limit_is_answered_202_and_run_as_a_batch(
    api: httpx.AsyncClient, settings: Settings, dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    cid, prefix = await sleeping_campaign(api), f"big-{uuid.uuid4().hex[:8]}-"
    recipients = [{"email": f"{prefix}{i}@example.com", "fields": {"n": i}} for i in range(LARGE)]
    recipients[7] = {"email": "not-an-address"}
    response = await api.post(f"/api/campaigns/{cid}/recipients", json={"recipients": recipients})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["accepted"] == LARGE and accepted["campaign_id"] == cid
    assert accepted["progress_url"] == f"/api/enrollment-batches/{accepted['batch_id']}"
    async with batch_worker(settings, dev_env.client):
        batch = await finished_batch(api, accepted["batch_id"], timeout=600)
    assert batch["status"] == "completed", batch
    assert (batch["enrolled"], batch["started"], batch["duplicates"], batch["rejected"]) == (
        LARGE - 1,
        LARGE - 1,
        0,
        1,
    )
    [rejected] = batch["rejected_rows"]
    assert rejected["row"] == 7 and rejected["email"] == "not-an-address"
    assert rejected["reason"].startswith("invalid email")
    assert enrollment_rows(engine, cid) == (LARGE - 1, LARGE - 1, LARGE - 1)

    async def all_started() -> bool:
        return await journeys_of(dev_env.client, cid, prefix) == LARGE - 1

    await eventually(all_started, timeout=30, what="every journey on the server")
    stats = (await api.get("/api/campaigns/stats", params={"campaign_id": cid})).json()
    assert stats["recipients"] == LARGE - 1
    # Started with the campaign's plan in their input: no plan to load when they first run.
    assert await pinned_step_ids(dev_env.client, cid, f"{prefix}0@example.com") == await step_ids(
        api, cid
    )


async def test_the_synchronous_limit_is_the_boundary(
    api: httpx.AsyncClient, settings: Settings, worker: None, dev_env: WorkflowEnvironment
) -> None:
    settings.sync_enroll_limit = 3  # the app reads its settings object per request
    cid, domain = await sleeping_campaign(api), unique_domain()
    three = [{"email": f"s{i}@{domain}"} for i in range(3)]
    small = await api.post(f"/api/campaigns/{cid}/recipients", json={"recipients": three})
    assert small.status_code == 200
    assert small.json() == {"enrolled": 3, "already_enrolled": 0, "rejected": []}
    assert await pinned_step_ids(dev_env.client, cid, f"s0@{domain}") == await step_ids(api, cid)
    four = [*three, {"email": f"s3@{domain}"}]
    large = await api.post(f"/api/campaigns/{cid}/recipients", json={"recipients": four})
    assert large.status_code == 202
    batch = await finished_batch(api, large.json()["batch_id"], timeout=60)
    assert (batch["enrolled"], batch["started"], batch["duplicates"]) == (1, 1, 3)


async def test_a_batch_runs_on_its_deployments_own_task_queue(
    api: httpx.AsyncClient, settings: Settings, dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    """Two deployments on one namespace each number their batches from 1: on a shared queue, one
    deployment's worker would run (and finish) the other's batch against its own database."""
    settings.sync_enroll_limit = 1
    cid, domain = await sleeping_campaign(api), unique_domain()
    two = [{"email": f"q{i}@{domain}"} for i in range(2)]
    response = await api.post(f"/api/campaigns/{cid}/recipients", json={"recipients": two})
    assert response.status_code == 202
    batch_id = response.json()["batch_id"]
    with Session(engine) as session:
        token = session.get_one(EnrollmentBatch, batch_id).token
    handle = dev_env.client.get_workflow_handle(batch_workflow_id(batch_id, token))
    assert (await handle.describe()).task_queue == settings.batch_task_queue
    assert settings.batch_task_queue != Settings.model_fields["batch_task_queue"].default
    async with batch_worker(settings, dev_env.client):
        batch = await finished_batch(api, batch_id, timeout=60)
    assert (batch["enrolled"], batch["started"]) == (2, 2)


def csv_upload(text: str, name: str = "list.csv") -> dict[str, Any]:
    return {"file": (name, text.encode("utf-8"), "text/csv")}


async def test_csv_import_reports_bad_rows_and_reimport_enrolls_nobody_twice(
    api: httpx.AsyncClient, worker: None, engine: Engine
) -> None:
    cid, d = await sleeping_campaign(api), unique_domain()
    await api.post("/api/suppressions", json={"email": f"sup@{d}", "reason": "unsubscribe"})
    old = await api.post(
        f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": f"old@{d}"}]}
    )
    assert old.json()["enrolled"] == 1
    text = (
        "Email,first_name,plan\n"  # line 1: the header, matched case-insensitively
        f"ana@{d},Ana,pro\n"  # 2
        "not-an-address,Bob,free\n"  # 3: invalid
        ",Nobody,free\n"  # 4: no address
        f"ben@{d},Ben,free,extra\n"  # 5: more values than columns
        f"ANA@{d},Ana again,pro\n"  # 6: same address as line 2
        f"sup@{d},Sup,free\n"  # 7: suppressed
        "\n"  # a blank line is skipped
        f"old@{d},Old,free\n"  # 9: already enrolled
        f'cy@{d},,"a, b"\n'  # 10: an empty cell leaves the field out; a quoted comma
    )
    first = await api.post(f"/api/campaigns/{cid}/recipients/import", files=csv_upload(text))
    assert first.status_code == 202, first.text
    assert (first.json()["accepted"], first.json()["rejected"]) == (8, 2)  # seen while reading
    batch = await finished_batch(api, first.json()["batch_id"], timeout=60)
    assert batch["source"] == "csv" and batch["filename"] == "list.csv"
    assert batch["status"] == "completed"
    counts = {
        k: batch[k]
        for k in ("accepted", "processed", "enrolled", "started", "duplicates", "rejected")
    }
    assert counts == {
        "accepted": 8,
        "processed": 8,
        "enrolled": 2,
        "started": 2,
        "duplicates": 2,
        "rejected": 4,
    }
    reasons = {r["row"]: (r["email"], r["reason"]) for r in batch["rejected_rows"]}
    assert sorted(reasons) == [3, 4, 5, 7]
    assert reasons[3][0] == "not-an-address" and reasons[3][1].startswith("invalid email")
    assert reasons[4][1] == "no email address"
    assert reasons[5][1] == "4 values but the header has 3 columns"
    assert reasons[7] == (f"sup@{d}", "suppressed: unsubscribe")
    page = (
        await api.get(
            f"/api/enrollment-batches/{batch['id']}",
            params={"rejected_limit": 2, "rejected_offset": 2},
        )
    ).json()
    assert [r["row"] for r in page["rejected_rows"]] == [5, 7]

    ana = (await api.get(f"/api/campaigns/{cid}/recipients/ana@{d}")).json()
    assert ana["fields"] == {"first_name": "Ana", "plan": "pro"}
    cy = (await api.get(f"/api/campaigns/{cid}/recipients/cy@{d}")).json()
    assert cy["fields"] == {"plan": "a, b"}

    again = await api.post(f"/api/campaigns/{cid}/recipients/import", files=csv_upload(text))
    assert again.status_code == 202
    batch = await finished_batch(api, again.json()["batch_id"], timeout=60)
    assert (batch["enrolled"], batch["started"], batch["duplicates"], batch["rejected"]) == (
        0,
        0,
        4,
        4,
    )
    assert enrollment_rows(engine, cid) == (3, 3, 3)  # old, ana, cy: once each
    stats = (await api.get("/api/campaigns/stats", params={"campaign_id": cid})).json()
    assert stats["recipients"] == 3


async def test_batch_enrollments_count_in_the_enrollment_metric(
    api: httpx.AsyncClient, worker: None
) -> None:
    """`drip_enrollments_total` counts every address, whichever path enrolled it: here a CSV
    import run by the batch job (once, only the synchronous route counted)."""
    cid, d = await sleeping_campaign(api), unique_domain()
    text = f"email,name\na@{d},A\nb@{d},B\nnot-an-address,N\n,Nobody\nA@{d},A again\n"
    before = await scrape(api)
    response = await api.post(f"/api/campaigns/{cid}/recipients/import", files=csv_upload(text))
    assert response.status_code == 202, response.text
    batch = await finished_batch(api, response.json()["batch_id"], timeout=60)
    assert (batch["enrolled"], batch["duplicates"], batch["rejected"]) == (2, 1, 2)
    after = await scrape(api)

    def delta(result: str) -> float:
        name = "drip_enrollments_total"
        return sample(after, name, result=result) - sample(before, name, result=result)

    assert (delta("enrolled"), delta("already_enrolled"), delta("rejected")) == (2, 1, 2)


async def test_bad_csv_uploads_are_refused_naming_the_file(api: httpx.AsyncClient) -> None:
    cid = await sleeping_campaign(api)
    path = f"/api/campaigns/{cid}/recipients/import"
    cases = [
        csv_upload("name,plan\nAna,pro\n"),  # no email column
        csv_upload(""),  # empty
        {"file": ("l.csv", "email\nzoë@example.com\n".encode("latin-1"), "text/csv")},  # not UTF-8
        csv_upload("email,Email\na@example.com,b\n"),  # the same column twice
    ]
    for files in cases:
        response = await api.post(path, files=files)
        assert response.status_code == 422, response.text
        assert error_locs(response) == [["body", "file"]], response.json()
    missing = await api.post(path, data={"other": "x"})
    assert missing.status_code == 422 and ["body", "file"] in error_locs(missing)
    unknown = await api.post("/api/campaigns/999999/recipients/import", files=csv_upload("email\n"))
    assert unknown.status_code == 404
    draft = await make_campaign(api, [], activate=False)
    refused = await api.post(
        f"/api/campaigns/{draft['id']}/recipients/import", files=csv_upload("email\n")
    )
    assert refused.status_code == 409
    assert (await api.get("/api/enrollment-batches/999999")).status_code == 404


async def test_a_batch_resumes_after_its_worker_dies_without_enrolling_anyone_twice(
    api: httpx.AsyncClient, settings: Settings, dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    settings.sync_enroll_limit = 100
    cid, prefix = await sleeping_campaign(api), f"crash-{uuid.uuid4().hex[:8]}-"
    recipients = [{"email": f"{prefix}{i}@example.com"} for i in range(CRASH_BATCH)]
    response = await api.post(f"/api/campaigns/{cid}/recipients", json={"recipients": recipients})
    assert response.status_code == 202
    batch_id = response.json()["batch_id"]

    async def midway() -> dict[str, Any] | None:
        body = (await api.get(f"/api/enrollment-batches/{batch_id}")).json()
        return body if body["started"] >= 250 else None

    async with batch_worker(settings, dev_env.client):
        await eventually(midway, timeout=120, what="the batch to get going")
    # The worker is gone, mid-batch: its chunk activity was cut off wherever it was.
    stopped = (await api.get(f"/api/enrollment-batches/{batch_id}")).json()
    assert stopped["status"] == "running" and stopped["started"] < CRASH_BATCH, stopped
    async with batch_worker(settings, dev_env.client):
        batch = await finished_batch(api, batch_id, timeout=300)
    assert batch["status"] == "completed"
    assert (batch["enrolled"], batch["started"], batch["duplicates"]) == (
        CRASH_BATCH,
        CRASH_BATCH,
        0,
    )
    assert enrollment_rows(engine, cid) == (CRASH_BATCH, CRASH_BATCH, CRASH_BATCH)

    async def all_started() -> bool:
        return await journeys_of(dev_env.client, cid, prefix) == CRASH_BATCH

    await eventually(all_started, timeout=30, what="every journey on the server, once")
