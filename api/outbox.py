"""Re-drives accepted work that has not reached Temporal yet: enrollments whose journey did not
start, enrollment batches whose workflow did not start, and events whose signal did not go
through (Temporal down, API killed mid-request).
With several API replicas, one at a time holds the outbox lease and does the rounds, so no start
or signal is issued twice by two replicas racing over the same rows; if the holder dies, another
takes over when the lease expires."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import timedelta

from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from api.enrollment import mark_started, unstarted
from api.enrollment_batches import start_batch, unstarted_batches
from api.ingest import deliver_signals, pending_signals
from api.journeys import Journeys
from observability.backlog import measure_now_and_then
from storage import leases
from storage.models import utcnow

log = logging.getLogger(__name__)


async def redrive_once(engine: Engine, journeys: Journeys, grace: timedelta) -> tuple[int, int]:
    cutoff = utcnow() - grace  # leave in-flight requests to finish their own work
    starts = await run_in_threadpool(unstarted, engine, cutoff)
    started = await journeys.start(starts) if starts else []
    await run_in_threadpool(mark_started, engine, started)
    for batch_id, token in await run_in_threadpool(unstarted_batches, engine, cutoff):
        await start_batch(journeys.client, engine, batch_id, token)
    pending = await run_in_threadpool(pending_signals, engine, None, cutoff)
    signalled = await deliver_signals(engine, journeys, pending)
    if started or signalled:
        log.info("outbox: started %d journeys, signalled %d events", len(started), signalled)
    await run_in_threadpool(measure_now_and_then, engine)  # the backlog gauges for alerts
    return len(started), signalled


OUTBOX_LEASE = "outbox"
# Long enough that a round (up to a thousand starts) never outlives it; short enough that a dead
# holder's backlog moves to another replica within a minute or so.
LEASE_MIN_SECONDS = 60.0


async def run_outbox(engine: Engine, journeys: Journeys, interval: float) -> None:
    holder = uuid.uuid4().hex
    ttl = timedelta(seconds=max(LEASE_MIN_SECONDS, 10 * interval))
    try:
        while True:
            try:
                if await run_in_threadpool(leases.hold, engine, OUTBOX_LEASE, holder, ttl):
                    await redrive_once(engine, journeys, timedelta(seconds=interval))
            except Exception:  # keep the loop alive; the next round tries again
                log.exception("outbox round failed")
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(Exception):  # best effort: else it expires by itself
            await asyncio.shield(run_in_threadpool(leases.release, engine, OUTBOX_LEASE, holder))
