"""Re-drives accepted work that has not reached Temporal yet: enrollments whose journey did not
start, enrollment batches whose workflow did not start, campaign status changes not yet told to
the running journeys, engagement and tracked events whose signal did not go through
(Temporal down, API killed mid-request), and webhook deliveries (journey events out) whose
workflow did not start; and A/B winners whose time has come are chosen.
With several API replicas, a round runs under a lease, one replica at a time, so no start or
signal is issued twice by two replicas racing over the same rows."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta

from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from domain.webhooks_out import webhook_task_queue
from observability.backlog import measure_now_and_then
from services import versions
from services.campaigns import tell_journeys
from services.enrollment import mark_started, unstarted
from services.enrollment_batches import discard_abandoned, start_batch, unstarted_batches
from services.events import Events
from services.journeys import Journeys
from services.tracking import Tracking
from services.variants import decide_due
from services.webhooks_out import redrive as redrive_webhooks
from storage import leases
from storage.campaign_status import unbroadcast
from storage.models import utcnow
from storage.versions import unbroadcast as unbroadcast_versions

log = logging.getLogger(__name__)


async def redrive_once(
    engine: Engine, journeys: Journeys, events: Events, grace: timedelta
) -> tuple[int, int]:
    cutoff = utcnow() - grace  # leave in-flight requests to finish their own work
    starts = await run_in_threadpool(unstarted, engine, cutoff)
    started = await journeys.start(starts) if starts else []
    await run_in_threadpool(mark_started, engine, started)
    for batch_id, token in await run_in_threadpool(unstarted_batches, engine, cutoff):
        await start_batch(journeys, engine, batch_id, token)
    await run_in_threadpool(discard_abandoned, engine)
    for campaign_id, change in await run_in_threadpool(unbroadcast, engine, cutoff):
        # Briefly: the round holds the outbox lease, and the next round tries again.
        await tell_journeys(engine, journeys, campaign_id, change, patience=5.0)
    for campaign_id, published in await run_in_threadpool(unbroadcast_versions, engine, cutoff):
        await versions.tell_journeys(engine, journeys, campaign_id, published, patience=5.0)
    pending = await run_in_threadpool(events.pending, None, cutoff)
    signalled = await events.deliver(pending)
    signalled += await Tracking(engine, journeys).redrive(cutoff)
    await redrive_webhooks(engine, journeys.client, webhook_task_queue(journeys.task_queue), cutoff)
    await run_in_threadpool(decide_due, engine)  # A/B winners whose time has come
    if started or signalled:
        log.info("outbox: started %d journeys, signalled %d events", len(started), signalled)
    await run_in_threadpool(measure_now_and_then, engine)  # the backlog gauges for alerts
    return len(started), signalled


OUTBOX_LEASE = "outbox"
# Held for one round at a time, so replicas take turns and each round sees the one before it
# marked done. Far longer than a round takes (at most a thousand starts and a thousand
# signals); a holder that died mid-round blocks the others this long at most.
LEASE_TTL = timedelta(seconds=60)


async def run_outbox(engine: Engine, journeys: Journeys, events: Events, interval: float) -> None:
    holder = uuid.uuid4().hex
    try:
        while True:
            try:
                if await run_in_threadpool(leases.hold, engine, OUTBOX_LEASE, holder, LEASE_TTL):
                    try:
                        await redrive_once(engine, journeys, events, timedelta(seconds=interval))
                    finally:
                        await run_in_threadpool(leases.release, engine, OUTBOX_LEASE, holder)
            except Exception:  # keep the loop alive; the next round tries again
                log.exception("outbox round failed")
            await asyncio.sleep(interval)
    finally:
        # Cancelled at shutdown, perhaps as a hold was being taken (a thread call finishes
        # before the cancel lands): give the lease up, or the next process waits LEASE_TTL.
        await asyncio.shield(run_in_threadpool(leases.release, engine, OUTBOX_LEASE, holder))
