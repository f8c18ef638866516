"""The baseline worker: `python -m bench.raw_worker` (TEMPORAL_ADDRESS), with the same poller
tuning and bytecode as drip's journey worker, so that only the work differs."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from urllib.parse import urlsplit

import aiosmtplib
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import PollerBehaviorSimpleMaximum, Worker

from bench.raw_workflows import RAW_SEND, RAW_TASK_QUEUE, RawSends, RawSleep, RawSteps, noop
from mail.message import MessageParts, build_message
from mail.transport import flatten
from settings import Settings
from worker import NONSTICKY_TO_STICKY_POLL_RATIO, compile_workflow_modules

SENDER = "bench@example.com"


class RawSender:
    """One message built once, sent to each recipient over kept connections (as many as sends
    run at once): nothing but SMTP and Temporal's activity round trip per message."""

    def __init__(self, smtp_url: str) -> None:
        parts = urlsplit(smtp_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 25
        message, _ = build_message(
            MessageParts(
                delivery_id="snd_raw",
                to="raw@example.com",
                from_email=SENDER,
                subject="raw send",
                html='<p>Hi</p><a href="https://example.com/a">a</a>',
                text="Hi\n",
                unsubscribe_url="https://example.com/u/raw",
                campaign_id=0,
                campaign_name="raw",
            )
        )
        self.data = flatten(message)
        self.idle: list[aiosmtplib.SMTP] = []

    @activity.defn(name=RAW_SEND)
    async def send(self, recipient: str) -> None:
        client = self.idle.pop() if self.idle else None
        if client is None:
            client = aiosmtplib.SMTP(hostname=self.host, port=self.port, local_hostname="bench")
            await client.connect()
        await client.sendmail(SENDER, [recipient], self.data)
        self.idle.append(client)


async def main() -> None:
    compile_workflow_modules(Path(__file__).parent)
    client = await Client.connect(os.environ["TEMPORAL_ADDRESS"])
    activities: list = [noop]  # type: ignore[type-arg]
    if os.environ.get("DRIP_SMTP_URL"):
        activities.append(RawSender(os.environ["DRIP_SMTP_URL"]).send)
    worker = Worker(
        client,
        task_queue=RAW_TASK_QUEUE,
        workflows=[RawSleep, RawSteps, RawSends],
        activities=activities,
        max_concurrent_activities=64,  # as drip's send worker
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
