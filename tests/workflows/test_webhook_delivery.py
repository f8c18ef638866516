"""The webhook delivery workflow on the time-skipping server, with fake attempts under the real
activity names: a refused POST is retried with exponential backoff (5 s doubling, at most an
hour apart) until the receiver takes it, and for at least 24 hours before it is given up."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.webhooks_out import DELIVER_WEBHOOK, GIVE_UP_WEBHOOK, WebhookDeliveryInput
from workflows.webhook_delivery import WebhookDeliveryWorkflow


@dataclass
class FakeReceiver:
    env: WorkflowEnvironment
    refusals: int  # attempts refused before one is taken
    attempts: list[datetime] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)

    @activity.defn(name=DELIVER_WEBHOOK)
    async def deliver_webhook(self, delivery_id: str) -> str:
        self.attempts.append(await self.env.get_current_time())
        if len(self.attempts) <= self.refusals:
            raise ApplicationError("answered 500", type="WebhookNotDelivered")
        return "delivered (200)"

    @activity.defn(name=GIVE_UP_WEBHOOK)
    async def give_up_webhook(self, delivery_id: str) -> None:
        self.given_up.append(delivery_id)

    def gaps(self) -> list[float]:
        return [(b - a).total_seconds() for a, b in itertools.pairwise(self.attempts)]


async def run(env: WorkflowEnvironment, receiver: FakeReceiver) -> str:
    queue = f"hooks-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[WebhookDeliveryWorkflow],
        activities=[receiver.deliver_webhook, receiver.give_up_webhook],
    ):
        return await env.client.execute_workflow(
            WebhookDeliveryWorkflow.run,
            WebhookDeliveryInput("whd_test"),
            id=f"hooks-{uuid.uuid4()}",
            task_queue=queue,
        )


async def test_refused_posts_are_retried_with_growing_gaps_until_taken(
    time_env: WorkflowEnvironment,
) -> None:
    receiver = FakeReceiver(time_env, refusals=4)
    assert await run(time_env, receiver) == "delivered (200)"
    assert len(receiver.attempts) == 5 and receiver.given_up == []
    gaps = receiver.gaps()
    for gap, expected in zip(gaps, [5, 10, 20, 40], strict=True):
        assert expected <= gap < expected + 2, gaps


async def test_a_receiver_that_never_takes_it_is_retried_for_days_then_given_up(
    time_env: WorkflowEnvironment,
) -> None:
    receiver = FakeReceiver(time_env, refusals=10_000)
    assert await run(time_env, receiver) == "failed"
    assert receiver.given_up == ["whd_test"]
    span = receiver.attempts[-1] - receiver.attempts[0]
    assert span >= timedelta(hours=24), span  # the floor; we retry for 3 days
    assert max(receiver.gaps()) <= 3600 + 2  # never more than an hour apart
    assert len(receiver.attempts) > 24
