"""The baseline worker: `python -m bench.raw_worker` (TEMPORAL_ADDRESS), with the same poller
tuning and bytecode as drip's journey worker, so that only the work differs."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import PollerBehaviorSimpleMaximum, Worker

from bench.raw_workflows import RAW_TASK_QUEUE, RawSleep, RawSteps, noop
from settings import Settings
from worker import NONSTICKY_TO_STICKY_POLL_RATIO, compile_workflow_modules


async def main() -> None:
    compile_workflow_modules(Path(__file__).parent)
    client = await Client.connect(os.environ["TEMPORAL_ADDRESS"])
    worker = Worker(
        client,
        task_queue=RAW_TASK_QUEUE,
        workflows=[RawSleep, RawSteps],
        activities=[noop],
        workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(Settings().workflow_task_polls),
        nonsticky_to_sticky_poll_ratio=NONSTICKY_TO_STICKY_POLL_RATIO,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with worker:
        print("raw worker polling", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
