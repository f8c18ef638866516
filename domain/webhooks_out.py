"""Journey events out: the event types a webhook subscription can ask for, and the boundary of
the delivery workflow (workflows/webhook_delivery.py). Stdlib only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum


class JourneyEventType(StrEnum):
    """What a subscription receives: a fact of a journey, told once (at least once) per fact."""

    JOURNEY_STARTED = "journey.started"
    STEP_SENT = "step.sent"
    STEP_ALTERNATIVE_SENT = "step.alternative_sent"
    STEP_SKIPPED = "step.skipped"
    JOURNEY_COMPLETED = "journey.completed"
    JOURNEY_EXITED = "journey.exited"  # with the journey's status: unsubscribed, bounced, ...
    JOURNEY_CONVERTED = "journey.converted"
    DELIVERY_BOUNCED = "delivery.bounced"
    RECIPIENT_UNSUBSCRIBED = "recipient.unsubscribed"


SIGNATURE_HEADER = "Drip-Signature"

# The activities, by the names they are registered under (recorded histories name them).
DELIVER_WEBHOOK = "deliver_webhook"
GIVE_UP_WEBHOOK = "give_up_webhook"

# Exponential backoff from RETRY_FIRST doubling up to RETRY_MAX between attempts, for
# RETRY_FOR in all (at least 24 h, as receivers expect of a durable sender).
RETRY_FIRST = timedelta(seconds=5)
RETRY_MAX = timedelta(hours=1)
RETRY_FOR = timedelta(days=3)
ATTEMPT_TIMEOUT = timedelta(seconds=30)  # above the POST's own 10 s
POST_TIMEOUT_SECONDS = 10.0


def webhook_task_queue(journey_task_queue: str) -> str:
    """Deliveries have their own queue beside the journeys': a slow receiver never holds the
    activity slots that journeys' bookkeeping needs."""
    return f"{journey_task_queue}-webhooks"


def webhook_workflow_id(delivery_id: str) -> str:
    """One workflow per delivery row (`whd_...`, never reused), ever: REJECT_DUPLICATE."""
    return f"drip-webhook-{delivery_id}"


@dataclass
class WebhookDeliveryInput:
    delivery_id: str
