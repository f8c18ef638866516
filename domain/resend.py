"""An operator's resend of an `uncertain` delivery, run by the worker that sends everything else
(workflows/resend.py): the API never talks SMTP itself."""

from __future__ import annotations

from dataclasses import dataclass

RESEND_DELIVERY = "resend_delivery"  # the activity's registered name


def resend_workflow_id(delivery_id: str) -> str:
    """One resend of a delivery at a time: a second request joins the running one."""
    return f"drip-resend-{delivery_id}"


@dataclass
class ResendInput:
    delivery_id: str
    send_task_queue: str


@dataclass
class ResendDelivery:
    """The resend activity's argument."""

    delivery_id: str


class ResendRefused:
    """ApplicationError types the resend activity fails with, for the API to map."""

    NOT_FOUND = "DeliveryNotFound"
    CONFLICT = "DeliveryNotResendable"
