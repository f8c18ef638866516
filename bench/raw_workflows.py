"""The raw-Temporal baselines: the least a workflow can do for each thing drip does.
Kept apart and small: the worker's sandbox re-imports this module for every new workflow."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow

RAW_TASK_QUEUE = "bench-raw"
RAW_SEND = "raw_send"  # bench/raw_worker.py: the activity stays out of the sandboxed module


@activity.defn
async def noop() -> None:
    return None


@workflow.defn
class RawSleep:
    """Starts, then sleeps for a year; counts the signals it gets (query `pings`)."""

    def __init__(self) -> None:
        self._pings = 0

    @workflow.run
    async def run(self) -> None:
        await asyncio.sleep(365 * 24 * 3600)

    @workflow.signal
    def ping(self, _key: str) -> None:
        self._pings += 1

    @workflow.query
    def pings(self) -> int:
        return self._pings


@workflow.defn
class RawSteps:
    """Sleeps each delay, then runs one no-op activity: a journey without the work."""

    @workflow.run
    async def run(self, delays: list[float]) -> int:
        for delay in delays:
            if delay > 0:
                await asyncio.sleep(delay)
            await workflow.execute_activity(noop, start_to_close_timeout=timedelta(minutes=1))
        return len(delays)


@workflow.defn
class RawSends:
    """Sleeps each delay, then sends one pre-built message to this address over a kept SMTP
    connection: the physical limit of sending on this design."""

    @workflow.run
    async def run(self, delays: list[float], recipient: str) -> int:
        for delay in delays:
            if delay > 0:
                await asyncio.sleep(delay)
            await workflow.execute_activity(
                RAW_SEND, recipient, start_to_close_timeout=timedelta(minutes=1)
            )
        return len(delays)
