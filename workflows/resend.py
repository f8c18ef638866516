"""An operator's resend of one `uncertain` delivery: one send attempt through the send
activity's own protocol (lease, point of no return, record), on the send queue."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from domain.resend import RESEND_DELIVERY, ResendDelivery, ResendInput

# As for a journey's send: a dead worker is noticed within the heartbeat timeout.
SEND_TIMEOUT = timedelta(minutes=2)
SEND_HEARTBEAT_TIMEOUT = timedelta(seconds=20)
# A few tries for a worker that died: the operator asked for one send, and waits for its answer.
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)


@workflow.defn
class ResendWorkflow:
    @workflow.run
    async def run(self, input: ResendInput) -> str:
        """The delivery's status after the attempt: sent, failed, bounced or uncertain."""
        status: str = await workflow.execute_activity(
            RESEND_DELIVERY,
            ResendDelivery(input.delivery_id),
            result_type=str,
            task_queue=input.send_task_queue,
            start_to_close_timeout=SEND_TIMEOUT,
            heartbeat_timeout=SEND_HEARTBEAT_TIMEOUT,
            retry_policy=RETRY,
        )
        return status
