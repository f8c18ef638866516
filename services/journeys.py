"""The Temporal gateway: start journeys, signal them, read one live. Built once per process
from settings (`Journeys.from_settings`)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.api.batch.v1 import BatchOperationSignal
from temporalio.api.workflowservice.v1 import StartBatchOperationRequest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from domain import search
from domain.enrollment import BATCH_TASK_QUEUE
from domain.journey import (
    CURRENT_JOURNEY_VERSION,
    SEND_TASK_QUEUE,
    TASK_QUEUE,
    CampaignChange,
    EngagementSignal,
    JourneyPlan,
    JourneyState,
    JourneyStatus,
    JourneyVersion,
    ProductEvent,
    RecipientInput,
)
from domain.resend import ResendInput, ResendRefused, resend_workflow_id
from domain.versions import VersionChange
from observability.metrics import SIGNAL_FAILURES
from services.errors import Conflict, NotFound
from settings import Settings
from workflows.recipient import RecipientWorkflow
from workflows.resend import ResendWorkflow

log = logging.getLogger(__name__)

# About the concurrency at which the server accepts starts fastest (reference/temporal-local.md).
START_CONCURRENCY = 16
# A lazily connected client that cannot reach the server raises RuntimeError, not RPCError;
# either way the work stays in the database and the outbox retries it.
UNREACHABLE = (RuntimeError,)
BROADCAST_RETRY_SECONDS = 1.0
BROADCAST_GIVE_UP_SECONDS = 300.0
SIGNAL_CONCURRENCY = 32
# A query needs a worker to answer it; without one, give up soon and fall back to the database.
QUERY_TIMEOUT = timedelta(seconds=5)


@dataclass
class JourneyStart:
    enrollment_id: int
    campaign_id: int
    email: str
    workflow_id: str
    plan: JourneyPlan | None = None  # None: the journey loads it
    entry: int = 1  # which entry into the campaign (services/reentry.py)
    enrolled_at: str | None = None  # the enrollment row's created_at, ISO 8601 UTC
    trigger: ProductEvent | None = None  # the tracked event that enrolled it, if one did


class Journeys:
    def __init__(
        self,
        client: Client,
        pause_recheck_seconds: float = 3600.0,
        task_queue: str = TASK_QUEUE,
        send_task_queue: str = SEND_TASK_QUEUE,
        batch_task_queue: str = BATCH_TASK_QUEUE,
    ) -> None:
        self.client = client
        self.pause_recheck_seconds = pause_recheck_seconds
        self.task_queue = task_queue
        self.send_task_queue = send_task_queue
        self.batch_task_queue = batch_task_queue
        self._background: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, client: Client, settings: Settings) -> Journeys:
        return cls(
            client,
            settings.pause_recheck_seconds,
            settings.task_queue,
            settings.journey_send_queue,
            settings.batch_task_queue,
        )

    async def start(
        self,
        starts: Iterable[JourneyStart],
        concurrency: int = START_CONCURRENCY,
        gate: asyncio.Semaphore | None = None,
    ) -> list[int]:
        """Start journeys concurrently (at most `concurrency`, or as `gate` lets: one shared by
        several calls); return the enrollment ids Temporal now has. An id already started counts
        as started: a journey runs at most once per (campaign, email)."""
        gate = gate or asyncio.Semaphore(concurrency)

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
                            self.send_task_queue,
                            local_bookkeeping=True,  # what code before `version` reads
                            plan=item.plan,
                            version=CURRENT_JOURNEY_VERSION
                            if item.plan is not None
                            else JourneyVersion.LOCAL_BOOKKEEPING,
                            enrolled_at=item.enrolled_at,
                            entry=item.entry,
                            trigger=item.trigger,
                        ),
                        id=item.workflow_id,
                        task_queue=self.task_queue,
                        static_summary=summary(item),
                        # Never a second journey for the same id, even after the first finished.
                        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                        search_attributes=TypedSearchAttributes(
                            [
                                SearchAttributePair(search.CAMPAIGN_ID, item.campaign_id),
                                SearchAttributePair(search.RECIPIENT_EMAIL, item.email),
                                SearchAttributePair(search.DRIP_STATUS, JourneyStatus.ACTIVE.value),
                                SearchAttributePair(
                                    search.CAMPAIGN_VERSION, item.plan.version if item.plan else 0
                                ),
                            ]
                        ),
                    )
                except WorkflowAlreadyStartedError:
                    pass
                except (RPCError, *UNREACHABLE) as exc:
                    log.warning(
                        "could not start %s yet (%s); the outbox retries",
                        item.workflow_id,
                        exc,
                        extra={"workflow_id": item.workflow_id},
                    )
                    return None
                else:
                    log.info("journey started", extra={"workflow_id": item.workflow_id})
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

    async def signal_tracked(self, targets: list[tuple[str, ProductEvent]]) -> list[bool]:
        """Signal each (workflow id, tracked event) `on_tracked`; True where done with (as
        `signal_events`)."""
        gate = asyncio.Semaphore(SIGNAL_CONCURRENCY)

        async def one(workflow_id: str, event: ProductEvent) -> bool:
            async with gate:
                handle = self.client.get_workflow_handle_for(RecipientWorkflow.run, workflow_id)
                return await _signal(handle, RecipientWorkflow.on_tracked, event)

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
            return await handle.query(RecipientWorkflow.progress, rpc_timeout=QUERY_TIMEOUT)
        except UNREACHABLE as exc:
            log.warning("no live state for %s (%s)", workflow_id, exc)
            return None
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                # No worker answered (none running, or all busy): the caller shows the
                # database's view of the journey rather than failing.
                log.warning("no live state for %s (%s)", workflow_id, exc)
            return None

    async def started_version(self, workflow_id: str) -> int | None:
        """The JourneyVersion a journey was started on, from its input (the first event of its
        history: finished journeys too, while Temporal keeps them); None when it has no
        history any more (or Temporal cannot be reached)."""
        handle = self.client.get_workflow_handle(workflow_id)
        try:
            async for event in handle.fetch_history_events(page_size=1, rpc_timeout=QUERY_TIMEOUT):
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                [started] = await self.client.data_converter.decode(payloads, [RecipientInput])
                return int(started.journey_version())
        except UNREACHABLE as exc:
            log.warning("no history for %s (%s)", workflow_id, exc)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:  # past its retention: nothing to say
                log.warning("no history for %s (%s)", workflow_id, exc)
        return None

    def in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` after the answer has gone; `drain` waits for it at shutdown."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def broadcast(
        self, campaign_id: int, change: CampaignChange, patience: float = BROADCAST_GIVE_UP_SECONDS
    ) -> bool:
        """One server-side batch signal to every running journey of the campaign; True once
        the server has it. Sending the same change twice is harmless: a journey applies a
        version once."""
        return await self._batch_signal(
            campaign_id,
            RecipientWorkflow.campaign_changed.__name__,
            change,
            f"status-{change.version}",
            f"campaign {campaign_id} is now {change.status} (change {change.version})",
            patience,
        )

    async def broadcast_version(
        self, campaign_id: int, change: VersionChange, patience: float = BROADCAST_GIVE_UP_SECONDS
    ) -> bool:
        """A version published with `migrate` or `exit`, to every running journey of the
        campaign in one batch signal (never one by one); as `broadcast`."""
        return await self._batch_signal(
            campaign_id,
            RecipientWorkflow.version_published.__name__,
            change,
            f"version-{change.version}",
            f"campaign {campaign_id} version {change.version} published ({change.policy})",
            patience,
        )

    async def _batch_signal(
        self, campaign_id: int, signal: str, arg: Any, job: str, reason: str, patience: float
    ) -> bool:
        from temporalio.api.common.v1 import Payloads

        payloads = await self.client.data_converter.encode([arg])
        request = StartBatchOperationRequest(
            namespace=self.client.namespace,
            job_id=f"campaign-{campaign_id}-{job}-{uuid.uuid4()}",
            reason=reason,
            # This deployment's journeys only: another on the namespace numbers campaigns too.
            visibility_query=(
                f'CampaignId = {int(campaign_id)} AND ExecutionStatus = "Running" '
                f'AND TaskQueue = "{self.task_queue}"'
            ),
            signal_operation=BatchOperationSignal(signal=signal, input=Payloads(payloads=payloads)),
        )
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + patience  # the server runs few batch operations at once
        while True:
            try:
                await self.client.workflow_service.start_batch_operation(request)
                break
            except RPCError as exc:
                busy = exc.status == RPCStatusCode.RESOURCE_EXHAUSTED
                if not busy or loop.time() > give_up_at:
                    log.warning("batch signal for campaign %s failed (%s)", campaign_id, exc)
                    return False
            except UNREACHABLE as exc:
                log.warning("batch signal for campaign %s failed (%s)", campaign_id, exc)
                return False
            await asyncio.sleep(BROADCAST_RETRY_SECONDS)
        return True

    async def resend(self, delivery_id: str) -> str:
        """Have the worker send an `uncertain` delivery again, and wait for the outcome (its
        status after the attempt). A second request while one runs joins it."""
        handle = await self.client.start_workflow(
            ResendWorkflow.run,
            ResendInput(delivery_id, self.send_task_queue),
            id=resend_workflow_id(delivery_id),
            task_queue=self.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        try:
            return await handle.result()
        except WorkflowFailureError as exc:
            refused = exc.cause.cause if isinstance(exc.cause, ActivityError) else exc.cause
            if isinstance(refused, ApplicationError) and refused.type == ResendRefused.NOT_FOUND:
                raise NotFound("delivery", delivery_id) from exc
            if isinstance(refused, ApplicationError) and refused.type == ResendRefused.CONFLICT:
                raise Conflict(refused.message) from exc
            raise

    async def drain(self) -> None:
        """Let background broadcasts finish (at shutdown)."""
        if self._background:
            await asyncio.wait(self._background, timeout=10)


def summary(item: JourneyStart) -> str:
    """The journey's static summary in the Temporal UI: whose journey in which campaign."""
    entry = f" (entry {item.entry})" if item.entry > 1 else ""
    return f"campaign {item.campaign_id} → {item.email}{entry}"


async def _signal(handle: WorkflowHandle[Any, Any], signal: Any, arg: Any) -> bool:
    try:
        await handle.signal(signal, arg)
        return True
    except UNREACHABLE as exc:
        SIGNAL_FAILURES.labels("UNREACHABLE").inc()
        log.warning("signal to %s failed (%s); the outbox retries", handle.id, exc)
        return False
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return True  # the journey is over: the event still counts in stats
        SIGNAL_FAILURES.labels(exc.status.name if exc.status else "UNKNOWN").inc()
        log.warning(
            "signal to %s failed (%s); the outbox retries",
            handle.id,
            exc,
            extra={"workflow_id": handle.id},
        )
        return False
