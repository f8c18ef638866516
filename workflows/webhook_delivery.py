"""One journey event to one webhook subscription: POST it until the receiver takes it (2xx),
with exponential backoff for days (domain/webhooks_out.py), then record it failed. Temporal
keeps the retry schedule, so a worker crash loses nothing: the next attempt runs elsewhere."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from domain.webhooks_out import (
        ATTEMPT_TIMEOUT,
        DELIVER_WEBHOOK,
        GIVE_UP_WEBHOOK,
        RETRY_FIRST,
        RETRY_FOR,
        RETRY_MAX,
        WebhookDeliveryInput,
    )

BACKOFF = RetryPolicy(initial_interval=RETRY_FIRST, backoff_coefficient=2.0,
                      maximum_interval=RETRY_MAX)  # fmt: skip


@workflow.defn
class WebhookDeliveryWorkflow:
    @workflow.run
    async def run(self, input: WebhookDeliveryInput) -> str:
        """What became of it: the last attempt's outcome, or `failed`."""
        try:
            outcome: str = await workflow.execute_activity(
                DELIVER_WEBHOOK,
                input.delivery_id,
                result_type=str,
                start_to_close_timeout=ATTEMPT_TIMEOUT,
                schedule_to_close_timeout=RETRY_FOR,
                retry_policy=BACKOFF,
                summary=f"POST webhook delivery {input.delivery_id}",
            )
            return outcome
        except ActivityError:  # retried for RETRY_FOR: the receiver never took it
            await workflow.execute_activity(
                GIVE_UP_WEBHOOK,
                input.delivery_id,
                start_to_close_timeout=timedelta(seconds=30),
                summary=f"record webhook delivery {input.delivery_id} failed",
            )
            return "failed"
