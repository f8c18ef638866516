"""A campaign's status reaches its running journeys in order and is never lost: each change is
counted, journeys keep the newest they hear of, and a change the API could not broadcast (Temporal
unreachable, the API killed) is broadcast by the outbox."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlmodel import Session
from temporalio.api.enums.v1 import BatchOperationState, EventType
from temporalio.api.workflowservice.v1 import (
    DescribeBatchOperationRequest,
    ListBatchOperationsRequest,
)
from temporalio.testing import WorkflowEnvironment

from domain.journey import CampaignChange, CampaignStatus, workflow_id
from services.journeys import Journeys, JourneyStart
from settings import Settings
from storage.db import make_engine
from storage.models import Campaign
from tests.conftest import free_port, run_worker, serve_api, unique_domain
from tests.support.enroll import enroll
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template
from tests.support.journey import journey
from workflows.recipient import RecipientWorkflow


def versions(settings: Settings, campaign_id: int) -> tuple[int, int]:
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        result = campaign.status_version, campaign.broadcast_version
    engine.dispose()
    return result


async def test_a_status_change_the_api_could_not_broadcast_reaches_the_journeys(
    settings: Settings, dev_env: WorkflowEnvironment
) -> None:
    email = f"held@{unique_domain()}"
    async with serve_api(settings, dev_env.client) as api, run_worker(settings, dev_env.client):
        template = await make_template(api)
        campaign = await make_campaign(
            api,
            [
                {"subject": "one", "delay_hours": 0, "template_id": template},
                {"subject": "two", "delay_hours": 24, "template_id": template},
            ],
        )
        await enroll(api, campaign["id"], email)

        async def first_sent() -> bool:
            return bool((await journey(api, campaign["id"], email))["steps"])

        await eventually(first_sent, what="step 1")
        assert versions(settings, campaign["id"]) == (1, 1)  # activated: nobody to tell

    down = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    async with serve_api(down, None) as api:
        response = await api.patch(f"/api/campaigns/{campaign['id']}", json={"status": "paused"})
        assert response.status_code == 200, response.text
    assert versions(settings, campaign["id"]) == (2, 1), "the broadcast should have failed"

    async with serve_api(settings, dev_env.client) as api, run_worker(settings, dev_env.client):

        async def paused() -> bool:
            return (await journey(api, campaign["id"], email))["paused"] is True

        try:
            await eventually(paused, timeout=60, what="the outbox to tell the journey it is paused")
        except AssertionError as exc:
            report = await broadcast_report(dev_env, campaign["id"], email)
            raise AssertionError(
                f"{exc}; versions {versions(settings, campaign['id'])}; {report}"
            ) from exc
    assert versions(settings, campaign["id"]) == (2, 2)


async def broadcast_report(env: WorkflowEnvironment, campaign_id: int, email: str) -> str:
    """What the server did with the campaign's batch signals, and what the journey received: the
    failure message of a broadcast test (a lost signal and a slow one look alike from outside)."""
    service, namespace = env.client.workflow_service, env.client.namespace
    listed = await service.list_batch_operations(
        ListBatchOperationsRequest(namespace=namespace, page_size=1000)
    )
    ops = []
    for info in listed.operation_info:
        if info.job_id.startswith(f"campaign-{campaign_id}-"):
            op = await service.describe_batch_operation(
                DescribeBatchOperationRequest(namespace=namespace, job_id=info.job_id)
            )
            ops.append(
                f"{op.job_id} {BatchOperationState.Name(op.state)} "
                f"{op.complete_operation_count}/{op.total_operation_count} "
                f"failed {op.failure_operation_count} query {op.query!r}"
            )
    handle = env.client.get_workflow_handle(workflow_id(campaign_id, email))
    history = await handle.fetch_history()
    events = [EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history.events]
    try:
        state: object = await handle.query(
            RecipientWorkflow.progress, rpc_timeout=timedelta(seconds=5)
        )
    except Exception as exc:  # what the view met, if the query is what failed
        state = repr(exc)
    return f"batch operations {ops}; journey history {events}; its progress query {state}"


async def test_a_quick_pause_and_resume_leaves_no_journey_paused(
    system: httpx.AsyncClient,
) -> None:
    """Pause and resume at once, while journeys are sending: every journey goes on (before,
    a pause signal overtaking the resume, or a held send crossing it, kept a journey paused until
    its hourly status re-check)."""
    domain = unique_domain()
    emails = [f"r{i}@{domain}" for i in range(20)]
    template = await make_template(system)
    campaign = await make_campaign(
        system,
        [
            {"subject": "one", "delay_hours": 0, "template_id": template},
            {"subject": "two", "delay_hours": 0, "template_id": template},
            {"subject": "three", "delay_hours": 0, "template_id": template},
        ],
    )
    await enroll(system, campaign["id"], *emails)
    for status in ("paused", "active", "paused", "active"):
        response = await system.patch(f"/api/campaigns/{campaign['id']}", json={"status": status})
        assert response.status_code == 200, response.text

    async def all_completed() -> bool:
        views = [await journey(system, campaign["id"], e) for e in emails]
        return all(v["status"] == "completed" for v in views)

    await eventually(all_completed, timeout=90, what="every journey to finish after the resume")
    views = [await journey(system, campaign["id"], e) for e in emails]
    assert not any(v["paused"] for v in views)


async def test_a_broadcast_reaches_only_this_deployments_journeys(
    dev_env: WorkflowEnvironment,
) -> None:
    """Deployments sharing a namespace each have a campaign 1: a pause of one deployment's
    campaign must not reach the other's journeys (nor wait behind signalling them all)."""
    client, campaign_id, domain = dev_env.client, 1_000_000 + free_port(), unique_domain()
    ours = Journeys(client, task_queue=f"ours-{domain}")
    theirs = Journeys(client, task_queue=f"theirs-{domain}")
    handles = {}
    for name, deployment in (("ours", ours), ("theirs", theirs)):
        email = f"{name}@{domain}"
        wid = workflow_id(campaign_id, email)
        await deployment.start([JourneyStart(1, campaign_id, email, wid)])  # no worker: pending
        handles[name] = client.get_workflow_handle(wid)
    query = f"CampaignId = {campaign_id}"

    async def both_visible() -> bool:
        return (await client.count_workflows(query)).count == 2

    async def signalled(name: str) -> bool:
        events = [e async for e in handles[name].fetch_history_events()]
        return any(e.HasField("workflow_execution_signaled_event_attributes") for e in events)

    try:
        await eventually(both_visible, what="both journeys in visibility")
        change = CampaignChange(CampaignStatus.PAUSED, 2)
        assert await ours.broadcast(campaign_id, change)
        await eventually(lambda: signalled("ours"), what="our journey to hear of the pause")
        await asyncio.sleep(2)  # the batch signals every matching journey within this
        assert not await signalled("theirs")
    finally:
        for handle in handles.values():
            await handle.terminate("test over")
