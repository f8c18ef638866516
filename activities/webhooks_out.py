"""The webhook delivery workflow's activities, thin over services/webhooks_out.py."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

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
            # Benign: a receiver that is down is expected, not our failure (the SDK logs it at
            # debug, not as an error with a traceback per attempt); the row records it.
            raise ApplicationError(
                attempt.detail,
                type="WebhookNotDelivered",
                category=ApplicationErrorCategory.BENIGN,
            )
        return attempt.detail

    @activity.defn(name=GIVE_UP_WEBHOOK)
    def give_up_webhook(self, delivery_id: str) -> None:
        self.deliverer.give_up(delivery_id)
