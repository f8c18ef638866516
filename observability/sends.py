"""Reports each send attempt's outcome: one counter increment and one log line that names the
journey (activity.logger carries its workflow id)."""

from __future__ import annotations

import logging

from temporalio import activity

from domain.journey import StepOutcome, StepResult
from observability.metrics import count_send

log = logging.getLogger("drip.sends")


def stopped_outcome(result: StepResult) -> str:
    """Why the send activity answered without sending."""
    if result.outcome == StepOutcome.HELD:
        return "held"
    if result.outcome == StepOutcome.DONE:
        return "already_sent"  # a retry of a step whose message already went out
    if result.outcome == StepOutcome.SWITCH:
        return "switched"  # migrated to a newer version: the journey decides its step instead
    if result.outcome == StepOutcome.CAPPED:
        return "capped"  # the frequency cap is full: the journey defers or skips the step
    return result.exit_status or "stopped"


def report_send(outcome: str, delivery_id: str | None) -> None:
    if not activity.in_activity():  # an operator's resend, from the API
        log.info("send %s", outcome, extra={"outcome": outcome, "delivery_id": delivery_id})
        return
    count_send(outcome)
    activity.logger.info("send %s", outcome, extra={"outcome": outcome, "delivery_id": delivery_id})
