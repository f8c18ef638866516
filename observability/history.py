"""An alert when a journey's workflow history grows past a threshold: Temporal terminates a
workflow whose history passes 51,200 events (or 50 MB), and a journey's history grows mostly by
the signals it is sent. Logged once per run (a warning naming the journey, from
`temporalio.workflow`) and counted in `drip_journey_history_alerts_total` on the worker's
metrics endpoint. Both are replay-safe: the SDK's workflow logger and metric meter stay quiet
while a history is replayed."""

from __future__ import annotations

from typing import Any

import temporalio.worker
from temporalio import workflow

HISTORY_ALERTS = "drip_journey_history_alerts"
HISTORY_ALERTS_HELP = "Journeys whose workflow history grew past DRIP_JOURNEY_HISTORY_ALERT_EVENTS"


class HistoryAlert(temporalio.worker.Interceptor):
    def __init__(self, threshold_events: int) -> None:
        self.threshold_events = threshold_events

    def workflow_interceptor_class(
        self,
        input: temporalio.worker.WorkflowInterceptorClassInput,  # noqa: ARG002 (the SDK's signature)
    ) -> type[temporalio.worker.WorkflowInboundInterceptor]:
        threshold = self.threshold_events

        class _Inbound(_HistoryInbound):
            threshold_events = threshold

        return _Inbound


class _HistoryInbound(temporalio.worker.WorkflowInboundInterceptor):
    """Observes only (no command, no state the workflow reads): determinism is untouched."""

    threshold_events = 0
    alerted = False

    async def handle_signal(self, input: temporalio.worker.HandleSignalInput) -> None:
        await super().handle_signal(input)
        self._check()

    async def execute_workflow(self, input: temporalio.worker.ExecuteWorkflowInput) -> Any:
        self._check()
        return await super().execute_workflow(input)

    def _check(self) -> None:
        length = workflow.info().get_current_history_length()
        if self.alerted or length <= self.threshold_events:
            return
        self.alerted = True
        workflow.logger.warning(
            "journey history has %d events, past the alert threshold of %d (Temporal ends a "
            "workflow at 51,200): look for a flood of signals",
            length,
            self.threshold_events,
            extra={"history_length": length},
        )
        workflow.metric_meter().create_counter(HISTORY_ALERTS, HISTORY_ALERTS_HELP).add(1)
