"""The baseline worker: `python -m bench.raw_worker` (TEMPORAL_ADDRESS), SDK defaults."""

from __future__ import annotations

import asyncio
import os
import signal

from temporalio.client import Client
from temporalio.worker import Worker

from bench.raw_workflows import RAW_TASK_QUEUE, RawSleep, RawSteps, noop


async def main() -> None:
    client = await Client.connect(os.environ["TEMPORAL_ADDRESS"])
    worker = Worker(
        client, task_queue=RAW_TASK_QUEUE, workflows=[RawSleep, RawSteps], activities=[noop]
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with worker:
        print("raw worker polling", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
