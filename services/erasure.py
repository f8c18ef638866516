"""Erasing a person (GDPR right to be forgotten), for `DELETE /api/recipients/{email}`.

In this order, so nothing is sent or recreated half-way:
1. every active enrollment of the address is marked `removed` (so no further step is sent even
   before its journey hears of it, and the outbox never starts one not yet started);
2. each running journey is signalled `remove` and given a few seconds to end;
3. its workflow execution is deleted from Temporal, history and visibility record included
   (the server terminates one that has not ended yet);
4. the database forgets the person: enrollments (with their fields), deliveries, events,
   tracked product events and conversions are deleted, and so are staged batch-enrollment rows
   and stored idempotent answers that name the address. Per-person stats (recipients, rates,
   conversions) lose that person as if never enrolled; running totals that hold only numbers
   (stat counters) keep counting them, anonymously;
5. a suppression (unsubscribed, bounced, complained, or added by an operator) is kept only as
   `hmac-sha256:<keyed hash of the address>` (storage/suppression.py), so the address is never
   mailed or enrolled again while the database no longer holds it. A provider event about it
   arriving later is stored without the address and still suppresses it (services/events.py).

An address nothing is known about answers 200 with `found: false` and zero counts: erasure is
idempotent, so a client retrying a request whose answer it lost gets a success, not an error."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sqlalchemy import delete, func, or_, update
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from domain import search
from domain.journey import TERMINAL_EVENTS, JourneyStatus
from mail.addresses import stored_form
from services import webhooks_out
from services.errors import Unavailable
from services.journeys import Journeys
from services.reentry import ERASED
from storage import tracked_events
from storage.counters import forget_enrollments
from storage.db import session_scope
from storage.inserts import insert_ignoring_conflicts
from storage.models import (
    CapAddress,
    CapSlot,
    Conversion,
    Delivery,
    DeliveryMilestone,
    Enrollment,
    EnrollmentBatchRow,
    ErasedDelivery,
    Event,
    IdempotencyRecord,
    Suppression,
    utcnow,
)
from storage.suppression import hashed, legacy_hashed

END_WAIT_SECONDS = 10.0  # for signalled journeys to end on their own before deletion
CONCURRENCY = 16


@dataclass
class Erasure:
    email: str
    found: bool
    journeys_ended: int
    workflows_deleted: int
    enrollments_deleted: int
    deliveries_deleted: int
    events_deleted: int
    tracked_events_deleted: int
    suppression: str | None


async def erase(engine: Engine, journeys: Journeys, email: str) -> Erasure:
    """Everything held about an address, in every campaign, in the order above."""
    address = stored_form(email)
    active, workflow_ids = await asyncio.to_thread(_stop_enrollments, engine, address)
    await asyncio.gather(*(journeys.remove(w, ERASED) for w in active))
    client = journeys.client
    executions = set(workflow_ids) | await _listed(client, address)
    await _wait_until_ended(client, executions)
    try:
        deleted = await _delete_executions(client, executions)
    except RPCError as exc:
        # The database still holds everything: a retry of this call finishes the job.
        raise Unavailable(
            f"Temporal did not delete the journeys ({exc.message}); nothing was erased "
            "from the database yet: retry the erasure"
        ) from exc
    counts, suppression = await asyncio.to_thread(_forget, engine, address)
    return Erasure(
        email=address,
        found=bool(workflow_ids or deleted or any(counts.values())),
        journeys_ended=len(active),
        workflows_deleted=deleted,
        enrollments_deleted=counts["enrollments"],
        deliveries_deleted=counts["deliveries"],
        events_deleted=counts["events"],
        tracked_events_deleted=counts["tracked_events"],
        suppression=suppression,
    )


# --- the database -----------------------------------------------------------------------------


def _stop_enrollments(engine: Engine, address: str) -> tuple[list[str], list[str]]:
    """Mark the address's active enrollments removed; return (their workflow ids, all ids)."""
    with session_scope(engine) as session:
        rows = session.exec(select(Enrollment).where(Enrollment.email == address)).all()
        active = [e for e in rows if e.status == JourneyStatus.ACTIVE]
        if active:
            session.execute(
                update(Enrollment)
                .where(col(Enrollment.id).in_([e.id for e in active]))
                # workflow_started: the outbox must not start a journey we are erasing.
                .values(status=JourneyStatus.REMOVED, status_reason=ERASED, workflow_started=True)
            )
        return [e.workflow_id for e in active], [e.workflow_id for e in rows]


def _forget(engine: Engine, address: str) -> tuple[dict[str, int], str | None]:
    """Delete every row about the address; keep its suppression as a hash. One transaction."""
    with session_scope(engine) as session:
        enrollment_ids = list(
            session.exec(select(Enrollment.id).where(Enrollment.email == address)).all()
        )
        delivery_ids = list(
            session.exec(
                select(Delivery.id).where(col(Delivery.enrollment_id).in_(enrollment_ids))
            ).all()
        )
        events = session.exec(
            select(Event.id, Event.type).where(
                or_(
                    func.lower(Event.email) == address,
                    col(Event.enrollment_id).in_(enrollment_ids),
                    col(Event.delivery_id).in_(delivery_ids),
                )
            )
        ).all()
        terminal = next((t for _, t in events if t in TERMINAL_EVENTS), None)
        session.execute(delete(Event).where(col(Event.id).in_([i for i, _ in events])))
        session.execute(
            delete(DeliveryMilestone).where(col(DeliveryMilestone.delivery_id).in_(delivery_ids))
        )
        session.execute(delete(Delivery).where(col(Delivery.id).in_(delivery_ids)))
        webhooks_out.forget(session, address)  # journey events out naming the address
        tombstones = [dict(id=d, erased_at=utcnow()) for d in delivery_ids]
        insert_ignoring_conflicts(session, ErasedDelivery, tombstones, returning="id")
        # Staged rows of a batch enrollment (kept for rejected ones) hold the address and fields.
        batch_rows = session.execute(
            delete(EnrollmentBatchRow).where(
                or_(
                    func.lower(EnrollmentBatchRow.email) == address,
                    col(EnrollmentBatchRow.enrollment_id).in_(enrollment_ids),
                )
            )
        )
        # The frequency cap's count of messages to the address (services/frequency.py).
        session.execute(delete(CapSlot).where(col(CapSlot.email) == address))
        session.execute(delete(CapAddress).where(col(CapAddress.email) == address))
        erased = select(Enrollment).where(col(Enrollment.id).in_(enrollment_ids))
        forget_enrollments(session, list(session.exec(erased).all()))  # stats drop them
        session.execute(delete(Conversion).where(col(Conversion.enrollment_id).in_(enrollment_ids)))
        session.execute(delete(Enrollment).where(col(Enrollment.id).in_(enrollment_ids)))
        tracked = tracked_events.delete_of(session, address)
        # Answers kept for retries may list the address (an enrollment's rejected rows).
        session.execute(
            delete(IdempotencyRecord).where(
                col(IdempotencyRecord.response_body).contains(address, autoescape=True)
            )
        )
        plain = list(
            session.exec(select(Suppression).where(func.lower(Suppression.email) == address))
        )
        # An entry erased before suppressions were keyed is rewritten in the keyed form.
        legacy = session.get(Suppression, legacy_hashed(address))
        plain += [legacy] if legacy is not None else []
        reason = plain[0].reason if plain else terminal
        if reason is not None:
            keep: dict[str, object] = dict(email=hashed(address), reason=reason, source=ERASED)
            if plain:
                keep.update(source=plain[0].source, created_at=plain[0].created_at)
            insert_ignoring_conflicts(session, Suppression, [keep], returning="email")
        for row in plain:
            session.delete(row)
        kept = session.get(Suppression, hashed(address))
        counts = {
            "enrollments": len(enrollment_ids),
            "deliveries": len(delivery_ids),
            "events": len(events),
            "tracked_events": tracked,
            "plain_suppression": len(plain),
            "batch_rows": batch_rows.rowcount,  # type: ignore[attr-defined]
        }
        return counts, kept.reason if kept else None


# --- Temporal ---------------------------------------------------------------------------------


async def _listed(client: Client, address: str) -> set[str]:
    """Executions the visibility index knows for the address: also finds a journey whose
    enrollment row is gone (e.g. started by a racing outbox pass during an earlier erasure)."""
    if '"' in address or "\\" in address:
        return set()  # cannot be quoted in a visibility query; the database ids still apply
    query = f'{search.RECIPIENT_EMAIL.name} = "{address}"'
    try:
        return {w.id async for w in client.list_workflows(query)}
    except RPCError:
        return set()  # visibility unavailable: the ids from the database still get deleted


async def _wait_until_ended(client: Client, workflow_ids: set[str]) -> None:
    """Give signalled journeys a moment to record their end; deletion terminates the rest."""
    deadline = time.monotonic() + END_WAIT_SECONDS
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(workflow_id: str) -> None:
        handle = client.get_workflow_handle(workflow_id)
        async with gate:
            while time.monotonic() < deadline:
                try:
                    description = await handle.describe()
                except RPCError:
                    return  # not found (never started, or gone): nothing to wait for
                if description.status is None or description.status.name != "RUNNING":
                    return
                await asyncio.sleep(0.2)

    await asyncio.gather(*(one(w) for w in workflow_ids))


async def _delete_executions(client: Client, workflow_ids: set[str]) -> int:
    """Delete each journey's execution: one run per id (ids are never reused, and journeys do
    not continue-as-new), so no run id is needed."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(workflow_id: str) -> bool:
        request = DeleteWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id),
        )
        async with gate:
            try:
                await client.workflow_service.delete_workflow_execution(request)
                return True
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    return False  # never started, or deleted already
                raise

    return sum(await asyncio.gather(*(one(w) for w in workflow_ids)))
