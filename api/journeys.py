"""Talking to the journeys in Temporal: start them, signal them, read one live."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from temporalio.api.batch.v1 import BatchOperationSignal
from temporalio.api.workflowservice.v1 import StartBatchOperationRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from domain import search
from domain.journey import TASK_QUEUE, EngagementSignal, JourneyState, JourneyStatus, RecipientInput
from workflows.recipient import RecipientWorkflow

log = logging.getLogger(__name__)

# About the concurrency at which the server accepts starts fastest (reference/temporal-local.md).
START_CONCURRENCY = 16
SIGNAL_CONCURRENCY = 32


@dataclass
class JourneyStart:
    enrollment_id: int
    campaign_id: int
    email: str
    workflow_id: str


class Journeys:
    def __init__(self, client: Client, pause_recheck_seconds: float = 3600.0) -> None:
        self.client = client
        self.pause_recheck_seconds = pause_recheck_seconds

    async def start(self, starts: Iterable[JourneyStart]) -> list[int]:
        """Start journeys concurrently; return the enrollment ids Temporal now has. An id
        already started counts as started: a journey runs at most once per (campaign, email)."""
        gate = asyncio.Semaphore(START_CONCURRENCY)

        async def start_one(item: JourneyStart) -> int | None:
            async with gate:
                try:
                    await self.client.start_workflow(
                        RecipientWorkflow.run,
                        RecipientInput(
                            item.campaign_id,
                            item.enrollment_id,
                            item.email,
                            self.pause_recheck_seconds,
                        ),
                        id=item.workflow_id,
                        task_queue=TASK_QUEUE,
                        # Never a second journey for the same id, even after the first finished.
                        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                        search_attributes=TypedSearchAttributes(
                            [
                                SearchAttributePair(search.CAMPAIGN_ID, item.campaign_id),
                                SearchAttributePair(search.RECIPIENT_EMAIL, item.email),
                                SearchAttributePair(search.DRIP_STEP, 0),
                                SearchAttributePair(search.DRIP_STATUS, JourneyStatus.ACTIVE.value),
                            ]
                        ),
                    )
                except WorkflowAlreadyStartedError:
                    pass
                except RPCError as exc:
                    log.warning(
                        "could not start %s yet (%s); the outbox retries", item.workflow_id, exc
                    )
                    return None
                return item.enrollment_id

        results = await asyncio.gather(*(start_one(item) for item in starts))
        return [r for r in results if r is not None]

    async def signal_events(self, targets: list[tuple[str, EngagementSignal]]) -> list[bool]:
        """Signal each (workflow id, event); True where the signal is done with — delivered, or
        the journey is already over so there is nothing left to tell it."""
        gate = asyncio.Semaphore(SIGNAL_CONCURRENCY)

        async def one(workflow_id: str, event: EngagementSignal) -> bool:
            async with gate:
                handle = self.client.get_workflow_handle_for(RecipientWorkflow.run, workflow_id)
                return await _signal(handle, RecipientWorkflow.on_event, event)

        return list(await asyncio.gather(*(one(w, e) for w, e in targets)))

    async def remove(self, workflow_id: str, reason: str) -> bool:
        handle = self.client.get_workflow_handle_for(RecipientWorkflow.run, workflow_id)
        return await _signal(handle, RecipientWorkflow.remove, reason)

    async def progress(self, workflow_id: str) -> JourneyState | None:
        """The live state of a running journey; None once it has finished (or is unknown)."""
        handle = self.client.get_workflow_handle_for(RecipientWorkflow.run, workflow_id)
        try:
            description = await handle.describe()
            if description.status is None or description.status.name != "RUNNING":
                return None
            return await handle.query(RecipientWorkflow.progress)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    async def broadcast_campaign_status(self, campaign_id: int, status: str) -> None:
        """Tell every running journey of a campaign, with one server-side batch signal.
        A journey the visibility index has not seen yet still learns it: every step re-reads
        the status from the database before it acts."""
        payloads = await self.client.data_converter.encode([status])
        from temporalio.api.common.v1 import Payloads

        request = StartBatchOperationRequest(
            namespace=self.client.namespace,
            job_id=f"campaign-{campaign_id}-{status}-{uuid.uuid4()}",
            reason=f"campaign {campaign_id} is now {status}",
            visibility_query=f'CampaignId = {int(campaign_id)} AND ExecutionStatus = "Running"',
            signal_operation=BatchOperationSignal(
                signal="campaign_status", input=Payloads(payloads=payloads)
            ),
        )
        try:
            await self.client.workflow_service.start_batch_operation(request)
        except RPCError as exc:
            log.warning(
                "batch signal for campaign %s failed (%s); journeys re-check it", campaign_id, exc
            )


async def _signal(handle: WorkflowHandle, signal, arg) -> bool:  # type: ignore[no-untyped-def]
    try:
        await handle.signal(signal, arg)
        return True
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return True  # the journey is over: the event still counts in stats
        log.warning("signal to %s failed (%s); the outbox retries", handle.id, exc)
        return False
