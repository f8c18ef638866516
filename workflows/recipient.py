"""One recipient's journey through one campaign: wait, decide, send, until the end or an exit."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from domain import search
    from domain.journey import (
        TERMINAL_EVENTS,
        ActivityName,
        CampaignChange,
        CampaignStatus,
        ConditionType,
        Decision,
        EngagementSignal,
        EventType,
        FinishInput,
        JourneyPlan,
        JourneyState,
        JourneyStatus,
        JourneyVersion,
        RecipientInput,
        StepInput,
        StepOutcome,
        StepPlan,
        StepProgress,
        StepResult,
    )

DB_TIMEOUT = timedelta(seconds=30)
SEND_TIMEOUT = timedelta(minutes=2)
# The send activity heartbeats while it talks to SMTP: a dead worker's send is retried in 20 s.
SEND_HEARTBEAT_TIMEOUT = timedelta(seconds=20)
# Transient failures (SMTP down, database locked) retry forever with backoff: never lost.
RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=5))

T = TypeVar("T")


@dataclass
class JourneyMemory:
    """Everything a journey knows, in one place (it lives in the workflow's memory only)."""

    exit: JourneyStatus | None = None  # set once: the first exit wins
    exit_reason: str | None = None
    paused: bool = False
    status_version: int = 0  # the newest CampaignChange.version heard of (0: none)
    seen_events: set[str] = field(default_factory=set)
    opened: set[int] = field(default_factory=set)  # step ids
    clicked: dict[int, set[str]] = field(default_factory=dict)  # step id -> normalised URLs
    progress: list[StepProgress] = field(default_factory=list)
    current_step: int = 0
    next_due: datetime | None = None
    status: JourneyStatus = JourneyStatus.ACTIVE


@workflow.defn
class RecipientWorkflow:
    @workflow.init
    def __init__(self, input: RecipientInput) -> None:
        self._input = input
        self._state = JourneyMemory()
        # From LOCAL_BOOKKEEPING on, the database bookkeeping (load_plan, record_skip,
        # finish_journey) runs as local activities: no activity task round trip through the
        # server, which was half its work per journey start (docs/performance.md). Older
        # journeys schedule them as activities, as their histories say. The version travels in
        # the input rather than behind workflow.patched(), whose marker also upserts a search
        # attribute: one more visibility write per journey.
        self._version = input.journey_version()
        self._local = self._version >= JourneyVersion.LOCAL_BOOKKEEPING

    @workflow.run
    async def run(self, input: RecipientInput) -> str:
        if self._version >= JourneyVersion.PINNED_PLAN and input.plan is not None:
            plan = input.plan
        else:
            plan = await self._bookkeeping(
                ActivityName.LOAD_PLAN, input.campaign_id, DB_TIMEOUT, JourneyPlan
            )
        mark = workflow.now()
        for step in plan.steps:
            self._state.next_due = mark + timedelta(seconds=step.delay_seconds)
            await self._wait_until(self._state.next_due, f"step {step.step_order} due")
            if self._state.exit is None:
                await self._run_step(step)
            if self._state.exit is not None:
                break
            mark = workflow.now()
        self._state.next_due = None
        self._state.status = self._state.exit or JourneyStatus.COMPLETED
        await self._bookkeeping(
            ActivityName.FINISH_JOURNEY,
            FinishInput(input.enrollment_id, self._state.status, self._state.exit_reason),
            DB_TIMEOUT,
        )
        workflow.upsert_search_attributes([search.DRIP_STATUS.value_set(self._state.status)])
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state.status

    @overload
    async def _bookkeeping(
        self, name: str, arg: Any, start_to_close: timedelta, result_type: type[T]
    ) -> T: ...

    @overload
    async def _bookkeeping(self, name: str, arg: Any, start_to_close: timedelta) -> None: ...

    async def _bookkeeping(
        self, name: str, arg: Any, start_to_close: timedelta, result_type: type[Any] | None = None
    ) -> Any:
        """A database activity of the journey worker: local, or scheduled for older journeys."""
        if self._local:
            return await workflow.execute_local_activity(
                name, arg, result_type=result_type, start_to_close_timeout=start_to_close,
                retry_policy=RETRY,
            )  # fmt: skip
        return await workflow.execute_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=start_to_close,
            retry_policy=RETRY,
        )

    async def _wait_until(self, due: datetime, summary: str) -> None:
        remaining = (due - workflow.now()).total_seconds()
        if remaining <= 0:
            return
        try:
            await workflow.wait_condition(
                lambda: self._state.exit is not None, timeout=remaining, timeout_summary=summary
            )
        except TimeoutError:
            pass

    async def _run_step(self, step: StepPlan) -> None:
        """Decide and act on one due step; hold (never skip) while the campaign is paused."""
        while self._state.exit is None:
            if self._state.paused:
                try:
                    await workflow.wait_condition(
                        lambda: not self._state.paused or self._state.exit is not None,
                        timeout=self._input.pause_recheck_seconds,
                        timeout_summary="paused: re-check campaign status",
                    )
                except TimeoutError:
                    pass  # re-read the database status through the step activity
                if self._state.exit is not None:
                    return
            decision, met = self._decide(step)
            step_input = StepInput(
                self._input.enrollment_id, step.step_id, step.step_order, decision, met
            )
            if decision == Decision.SKIPPED:
                result = await self._bookkeeping(
                    ActivityName.RECORD_SKIP, step_input, SEND_TIMEOUT, StepResult
                )
            else:
                result = await workflow.execute_activity(
                    ActivityName.SEND_STEP,
                    step_input,
                    result_type=StepResult,
                    task_queue=self._input.send_task_queue,
                    start_to_close_timeout=SEND_TIMEOUT,
                    heartbeat_timeout=SEND_HEARTBEAT_TIMEOUT,
                    retry_policy=RETRY,
                )
            if result.outcome == StepOutcome.HELD:
                # Unless a newer status arrived while the step was out (a resume crossing it).
                if result.status_version >= self._state.status_version:
                    self._state.paused = True
                continue
            if result.outcome == StepOutcome.ENDED:
                self._end(result.exit_status or JourneyStatus.REMOVED, result.reason)
                return
            self._state.paused = False
            self._state.current_step = step.step_order
            self._state.progress.append(
                StepProgress(
                    step.step_id,
                    step.step_order,
                    decision,
                    met,
                    workflow.now().isoformat(),
                    result.delivery_id,
                )
            )
            workflow.upsert_search_attributes([search.DRIP_STEP.value_set(step.step_order)])
            return

    def _decide(self, step: StepPlan) -> tuple[Decision, bool | None]:
        condition = step.condition
        if condition is None:
            return Decision.SENT, None
        clicks = self._state.clicked.get(condition.step_id, set())
        if condition.type in (ConditionType.OPENED, ConditionType.NOT_OPENED):
            happened = condition.step_id in self._state.opened or bool(
                clicks
            )  # a click implies an open
        elif condition.url:
            happened = _normalise_url(condition.url) in clicks
        else:
            happened = bool(clicks)
        met = (
            happened
            if condition.type in (ConditionType.OPENED, ConditionType.CLICKED)
            else not happened
        )
        if met:
            return Decision.SENT, True
        return (Decision.ALTERNATIVE if step.has_alternative else Decision.SKIPPED), False

    def _end(self, status: JourneyStatus, reason: str | None) -> None:
        if self._state.exit is None:  # the first exit wins
            self._state.exit = status
            self._state.exit_reason = reason

    @workflow.signal
    def on_event(self, event: EngagementSignal) -> None:
        if event.event_id in self._state.seen_events:
            return  # providers retry: each event counts once
        self._state.seen_events.add(event.event_id)
        terminal = TERMINAL_EVENTS.get(event.type)
        if terminal is not None:
            self._end(terminal, f"{event.type} event")
            return
        if event.machine or event.step_id is None:
            return  # conditions count human engagement only
        if event.type == EventType.OPEN:
            self._state.opened.add(event.step_id)
        elif event.type == EventType.CLICK:
            self._state.clicked.setdefault(event.step_id, set()).add(
                _normalise_url(event.url or "")
            )

    @workflow.signal
    def remove(self, reason: str) -> None:
        self._end(JourneyStatus.REMOVED, reason)

    @workflow.signal
    def campaign_status(self, status: str) -> None:
        """The unversioned form, as histories recorded before CampaignChange carry it."""
        self._apply_status(CampaignStatus(status))

    @workflow.signal
    def campaign_changed(self, change: CampaignChange) -> None:
        if change.version < self._state.status_version:
            return  # older than one already applied: a batch signal overtaken by the next
        self._state.status_version = change.version
        self._apply_status(change.status)

    def _apply_status(self, status: CampaignStatus) -> None:
        if status == CampaignStatus.ARCHIVED:
            self._end(JourneyStatus.ARCHIVED, "campaign archived")
        else:
            self._state.paused = status == CampaignStatus.PAUSED

    @workflow.query
    def progress(self) -> JourneyState:
        return JourneyState(
            status=self._state.exit or self._state.status,
            current_step=self._state.current_step,
            next_step_due_at=self._state.next_due.isoformat() if self._state.next_due else None,
            paused=self._state.paused,
            steps=list(self._state.progress),
            opened_steps=sorted(self._state.opened),
            clicked={str(k): sorted(v) for k, v in self._state.clicked.items()},
            exit_reason=self._state.exit_reason,
            events_counted=len(self._state.seen_events),
        )


def _normalise_url(url: str) -> str:
    return url.strip().rstrip("/")
