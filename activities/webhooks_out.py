"""The webhook delivery workflow's activities, thin over services/webhooks_out.py."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.webhooks_out import DELIVER_WEBHOOK, GIVE_UP_WEBHOOK
from services.webhooks_out import Deliverer


class WebhookActivities:
    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer

    @activity.defn(name=DELIVER_WEBHOOK)
    async def deliver_webhook(self, delivery_id: str) -> str:
        """One attempt, recorded on the row; a refusal fails the attempt, so Temporal retries."""
        attempt = await self.deliverer.attempt(delivery_id)
        if not attempt.done:
            raise ApplicationError(attempt.detail, type="WebhookNotDelivered")
        return attempt.detail

    @activity.defn(name=GIVE_UP_WEBHOOK)
    def give_up_webhook(self, delivery_id: str) -> None:
        self.deliverer.give_up(delivery_id)
