"""One recipient's journey through one campaign: wait, decide, send, until the end or an exit."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from domain import conditions, search
    from domain.journey import (
        POSITIVE_CONDITIONS,
        TERMINAL_EVENTS,
        ActivityName,
        CampaignChange,
        CampaignStatus,
        CapAnswer,
        CapRequest,
        ConditionPlan,
        ConditionType,
        Decision,
        EngagementSignal,
        EventType,
        Evidence,
        FinishInput,
        JourneyPlan,
        JourneyState,
        JourneyStatus,
        JourneyVersion,
        ProductEvent,
        RecipientInput,
        SendTimeAnswer,
        SendTimeQuery,
        SendWindowPlan,
        StepInput,
        StepOutcome,
        StepPlan,
        StepProgress,
        StepResult,
        TrackedEventsQuery,
        WaitingFor,
        WaitingKind,
    )
    from domain.versions import (
        VersionChange,
        VersionPlanQuery,
        VersionPolicy,
        exit_reason,
        resume_index,
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
    # step id -> its human opens and clicks, in arrival order: the evidence of decisions
    engagement: dict[int, list[Evidence]] = field(default_factory=dict)
    tracked: dict[str, ProductEvent] = field(default_factory=dict)  # by event id (JOURNEYS)
    progress: list[StepProgress] = field(default_factory=list)
    current_step: int = 0
    next_due: datetime | None = None
    waiting_for: WaitingFor | None = None
    status: JourneyStatus = JourneyStatus.ACTIVE


@dataclass
class Verdict:
    """A step's decision, with why: frozen once made (from JOURNEYS on), so a step held by a
    pause after its wait settled sends what was decided, never both message and alternative."""

    decision: Decision
    met: bool | None
    reason: str
    evidence: list[Evidence]


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
        # From JOURNEYS on: product events, wait-until, goals, frozen decisions, summaries.
        self._journeys = self._version >= JourneyVersion.JOURNEYS
        # From TIMING on: delay_until dates, send windows and the frequency cap.
        self._timing = self._version >= JourneyVersion.TIMING
        # From VERSIONS on: a version published with `migrate` is switched to at the next step
        # boundary (`_migrated` is the newest such version heard of).
        self._versions = self._version >= JourneyVersion.VERSIONS
        self._migrated = 0
        # From STEP_AND_VERSION_IN_DATABASE on: no `DripStep` upsert per step, and a send may
        # answer SWITCH (migrated to a version not yet heard of).
        self._database_led = self._version >= JourneyVersion.STEP_AND_VERSION_IN_DATABASE
        # From CAP_IN_SEND on: the send takes the frequency-cap slot (one local activity and
        # marker fewer per step); a full cap answers CAPPED.
        self._cap_in_send = self._version >= JourneyVersion.CAP_IN_SEND
        # From PAUSE_OUTLIVES_SEND on: a send's answer clears a pause only if no status change
        # was signalled while it was out (that pause is newer than what the send read).
        self._pause_outlives_send = self._version >= JourneyVersion.PAUSE_OUTLIVES_SEND
        self._held: str | None = None  # the DripHeld search attribute as last set
        self._window_note: str | None = None  # the last window check's words (zone, why)
        self._plan = input.plan if self._version >= JourneyVersion.PINNED_PLAN else None
        # Tracked events before the enrollment never count.
        self._since = (
            conditions.parse_utc(input.enrolled_at)
            if input.enrolled_at
            else workflow.info().start_time
        )

    @workflow.run
    async def run(self, input: RecipientInput) -> str:
        if self._plan is not None:
            plan = self._plan
        else:
            plan = await self._bookkeeping(
                ActivityName.LOAD_PLAN, input.campaign_id, DB_TIMEOUT, JourneyPlan
            )
            self._plan = plan
        if self._journeys and plan.goal is not None:
            # A goal tracked while the journey was starting was signalled to no one.
            await self._load_tracked([plan.goal.event], "goal")
            self._check_goal()
        mark = workflow.now()
        index = 0
        while index < len(plan.steps):
            if self._switch_due():
                plan = await self._switch()
                index = resume_index([p.step_id for p in self._state.progress], _ids(plan))
                continue  # its next step's delay is the new version's, still from `mark`
            step = plan.steps[index]
            self._state.next_due = self._due_at(step, mark)
            skip: Verdict | None = None
            if self._timing and step.delay_until is not None:
                skip = await self._date_due(step)
            else:
                self._waiting(
                    WaitingKind.DELAY, step, self._state.next_due,
                    f"step {step.step_order} is due at {conditions.utc_text(self._state.next_due)}",
                )  # fmt: skip
            await self._wait_until(
                self._state.next_due, f"step {step.step_order} due", switchable=True
            )
            if self._switch_due():
                continue  # published while it waited: the step is the new version's to decide
            if self._state.exit is None and not await self._run_step(step, skip):
                continue  # published during its wait-until: decided under the new version
            if self._state.exit is not None:
                break
            mark = workflow.now()
            index += 1
        self._state.next_due = None
        self._waiting(None)
        self._state.status = self._state.exit or JourneyStatus.COMPLETED
        await self._bookkeeping(
            ActivityName.FINISH_JOURNEY,
            FinishInput(input.enrollment_id, self._state.status, self._state.exit_reason),
            DB_TIMEOUT,
            summary=f"finish journey: {self._state.status}",
        )
        workflow.upsert_search_attributes([search.DRIP_STATUS.value_set(self._state.status)])
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state.status

    @overload
    async def _bookkeeping(
        self,
        name: str,
        arg: Any,
        start_to_close: timedelta,
        result_type: type[T],
        summary: str | None = None,
    ) -> T: ...

    @overload
    async def _bookkeeping(
        self, name: str, arg: Any, start_to_close: timedelta, *, summary: str | None = None
    ) -> None: ...

    async def _bookkeeping(
        self,
        name: str,
        arg: Any,
        start_to_close: timedelta,
        result_type: type[Any] | None = None,
        summary: str | None = None,
    ) -> Any:
        """A database activity of the journey worker: local, or scheduled for older journeys.
        Its summary (the Temporal UI's) names the step, from JOURNEYS on."""
        summary = summary if self._journeys else None
        if self._local:
            return await workflow.execute_local_activity(
                name, arg, result_type=result_type, start_to_close_timeout=start_to_close,
                retry_policy=RETRY, summary=summary,
            )  # fmt: skip
        return await workflow.execute_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=start_to_close,
            retry_policy=RETRY,
            summary=summary,
        )

    def _due_at(self, step: StepPlan, mark: datetime) -> datetime:
        """When a step falls due: its delay after the previous step's send (or decision, when
        it sent nothing), or after the start for the first."""
        return mark + timedelta(seconds=step.delay_seconds)

    async def _date_due(self, step: StepPlan) -> Verdict | None:
        """From TIMING on, a `delay_until` step's due time from the recipient's field as it is
        now (computed by a local activity, kept in the history); a skip verdict when the field
        is missing or not a date."""
        answer = await self._bookkeeping(
            ActivityName.SEND_TIME,
            SendTimeQuery(
                self._input.enrollment_id, workflow.now().isoformat(),
                self._window_of(step), step.delay_until,
            ),
            DB_TIMEOUT,
            SendTimeAnswer,
            summary=f"step {step.step_order}: due date",
        )  # fmt: skip
        if answer.at is None:
            self._state.next_due = workflow.now()
            return Verdict(Decision.SKIPPED, None, f"skipped: {answer.reason}", [])
        self._state.next_due = conditions.parse_utc(answer.at)
        self._waiting(
            WaitingKind.DATE, step, self._state.next_due,
            f"step {step.step_order} is due at {conditions.utc_text(self._state.next_due)}: "
            f"{answer.reason}",
            zone=answer.zone,
        )  # fmt: skip
        return None

    def _window_of(self, step: StepPlan) -> SendWindowPlan | None:
        """The send window a step goes out in: its own, else the campaign's; none when it
        ignores windows."""
        if step.ignore_send_window:
            return None
        plan_window = self._plan.send_window if self._plan is not None else None
        return step.send_window or plan_window

    async def _gate(self, step: StepPlan) -> bool | str | None:
        """From TIMING on, just before a decided step's message goes out: wait for its send
        window to open, then take a slot under the frequency cap (deferred: wait for the slot
        to free, windows still applying). True: send now; a reason: skip it (the cap, with
        on_cap skip); None: the journey ended, the campaign was paused, or a version to switch
        to arrived meanwhile."""
        plan = self._plan
        assert plan is not None
        window = self._window_of(step)
        self._window_note = None
        while self._state.exit is None and not self._state.paused and not self._switch_due():
            now = workflow.now()
            if window is not None:
                answer = await self._bookkeeping(
                    ActivityName.SEND_TIME,
                    SendTimeQuery(self._input.enrollment_id, now.isoformat(), window),
                    DB_TIMEOUT,
                    SendTimeAnswer,
                    summary=f"step {step.step_order}: send window",
                )  # fmt: skip
                opening = conditions.parse_utc(answer.at or now.isoformat())
                self._window_note = answer.reason
                if opening > now:
                    await self._hold(
                        step, WaitingKind.SEND_WINDOW, opening,
                        f"step {step.step_order} is {answer.reason}", answer.zone,
                    )  # fmt: skip
                    continue
            if plan.frequency_cap != "exempt" and not self._cap_in_send:
                cap = await self._bookkeeping(
                    ActivityName.RESERVE_CAP_SLOT,
                    CapRequest(
                        self._input.enrollment_id, step.step_id, plan.campaign_id,
                        self._input.email, now.isoformat(), plan.on_cap,
                    ),
                    DB_TIMEOUT,
                    CapAnswer,
                    summary=f"step {step.step_order}: frequency cap",
                )  # fmt: skip
                if not cap.granted:
                    refused = await self._capped(step, cap.reason, cap.next_free_at)
                    if refused is not None:
                        return refused
                    continue
            self._unhold()
            return True
        return None

    async def _capped(self, step: StepPlan, reason: str, next_free_at: str | None) -> str | None:
        """The frequency cap is full for this step's message: with on_cap skip (or no slot
        ever freeing), the skip's reason; else hold until the next slot frees (None)."""
        plan = self._plan
        assert plan is not None
        if plan.on_cap == "skip" or next_free_at is None:
            self._unhold()
            return f"skipped: frequency_cap ({reason})"
        frees = conditions.parse_utc(next_free_at)
        await self._hold(
            step, WaitingKind.FREQUENCY_CAP, frees,
            f"step {step.step_order} waits for the frequency cap until "
            f"{conditions.utc_text(frees)}: {reason}",
        )  # fmt: skip
        return None

    async def _hold(
        self,
        step: StepPlan,
        kind: WaitingKind,
        until: datetime,
        reason: str,
        zone: str | None = None,
    ) -> None:
        """Hold a step's message until `until` (a window's opening, a cap slot freeing),
        findable in the Temporal UI by `DripHeld`."""
        self._state.next_due = until
        self._waiting(kind, step, until, reason, zone=zone)
        if self._held != kind:
            self._held = str(kind)
            workflow.upsert_search_attributes([search.DRIP_HELD.value_set(self._held)])
        await self._wait_until(until, f"step {step.step_order}: {kind}", switchable=True)

    def _unhold(self) -> None:
        if self._held is not None:
            self._held = None
            workflow.upsert_search_attributes([search.DRIP_HELD.value_unset()])

    async def _wait_until(self, due: datetime, summary: str, switchable: bool = False) -> None:
        """Until `due` or the journey's end; `switchable`: or a version to switch to."""
        remaining = (due - workflow.now()).total_seconds()
        if remaining <= 0:
            return
        try:
            await workflow.wait_condition(
                lambda: self._state.exit is not None or (switchable and self._switch_due()),
                timeout=remaining,
                timeout_summary=summary,
            )
        except TimeoutError:
            pass

    def _cap_of_send(self) -> str | None:
        """From CAP_IN_SEND on, what the send does when the frequency cap is full: the
        campaign's on_cap; None when it is exempt (or the journey took the slot itself)."""
        plan = self._plan
        if not self._cap_in_send or plan is None or plan.frequency_cap == "exempt":
            return None
        return plan.on_cap

    def _content_version(self) -> int:
        """The version whose content a step sends: the plan's, from VERSIONS on (0 before: the
        enrollment's, as the send activity reads it)."""
        return self._plan.version if self._versions and self._plan is not None else 0

    def _switch_due(self) -> bool:
        """A version published with `migrate`, newer than the plan's, is waiting to be taken."""
        return self._plan is not None and self._migrated > self._plan.version

    async def _switch(self) -> JourneyPlan:
        """Take the newest migrated version's plan (read by a local activity: the plan switched
        to is in the history, so the journey replays as it ran)."""
        plan = await self._bookkeeping(
            ActivityName.LOAD_VERSION_PLAN,
            VersionPlanQuery(self._input.campaign_id, self._migrated),
            DB_TIMEOUT,
            JourneyPlan,
            summary=f"migrate to version {self._migrated}",
        )
        self._plan = plan
        workflow.upsert_search_attributes([search.CAMPAIGN_VERSION.value_set(plan.version)])
        return plan

    async def _run_step(self, step: StepPlan, decided: Verdict | None = None) -> bool:
        """Decide and act on one due step; hold (never skip) while the campaign is paused.
        `decided`: a verdict made before the step fell due (a delay_until step skipped).
        False: left undecided for a version to switch to (published during its wait-until, or
        while it was held by a pause, a send window or the frequency cap, or found by the send
        before its signal arrived)."""
        verdict: Verdict | None = decided
        skip_reason = decided.reason if decided else None  # a skip no condition decided
        while self._state.exit is None:
            if self._state.paused:
                self._waiting(
                    WaitingKind.PAUSED, step, None,
                    f"step {step.step_order} is held: the campaign is paused",
                )  # fmt: skip
                try:
                    await workflow.wait_condition(
                        lambda: (
                            not self._state.paused
                            or self._state.exit is not None
                            or self._switch_due()
                        ),
                        timeout=self._input.pause_recheck_seconds,
                        timeout_summary=f"step {step.step_order} paused: re-check campaign status"
                        if self._journeys
                        else "paused: re-check campaign status",
                    )
                except TimeoutError:
                    pass  # re-read the database status through the step activity
                if self._state.exit is not None:
                    return True
                if self._switch_due():
                    return False  # held by the pause: the new version's step is held instead
            if verdict is None or not self._journeys:  # older journeys decide again
                await self._settle(step)
                if self._state.exit is not None:
                    return True
                if self._switch_due():
                    return False
                verdict = self._decide(step)
                if self._journeys and self._state.paused:
                    continue  # paused while it waited: hold the decided step
            self._waiting(None)
            if self._timing and verdict.decision != Decision.SKIPPED:
                gate = await self._gate(step)
                if gate is None and self._switch_due():
                    self._unhold()
                    return False  # published while held: decided again under the new version
                if gate is None:
                    continue  # ended, or paused while held: hold the decided step
                if gate is not True:
                    verdict = Verdict(Decision.SKIPPED, verdict.met, str(gate), verdict.evidence)
                    skip_reason = verdict.reason
                elif self._window_note:  # which zone its window was read in, and why
                    verdict = Verdict(
                        verdict.decision, verdict.met, f"{verdict.reason}; {self._window_note}",
                        verdict.evidence,
                    )  # fmt: skip
                self._waiting(None)
            step_input = StepInput(
                self._input.enrollment_id, step.step_id, step.step_order, verdict.decision,
                verdict.met, skip_reason, campaign_version=self._content_version(),
                switchable=self._database_led, on_cap=self._cap_of_send(),
            )  # fmt: skip
            status_asked = self._state.status_version  # a change signalled from here is newer
            if verdict.decision == Decision.SKIPPED:
                result = await self._bookkeeping(
                    ActivityName.RECORD_SKIP, step_input, SEND_TIMEOUT, StepResult,
                    summary=f"step {step.step_order}: record skipped",
                )  # fmt: skip
            else:
                result = await workflow.execute_activity(
                    ActivityName.SEND_STEP,
                    step_input,
                    result_type=StepResult,
                    task_queue=self._input.send_task_queue,
                    start_to_close_timeout=SEND_TIMEOUT,
                    heartbeat_timeout=SEND_HEARTBEAT_TIMEOUT,
                    retry_policy=RETRY,
                    summary=f"step {step.step_order}: send ({verdict.decision})"
                    if self._journeys
                    else None,
                )
            if result.outcome == StepOutcome.HELD:
                # Unless a newer status arrived while the step was out (a resume crossing it).
                if result.status_version >= self._state.status_version:
                    self._state.paused = True
                continue
            if result.outcome == StepOutcome.ENDED:
                self._end(result.exit_status or JourneyStatus.REMOVED, result.reason)
                return True
            if result.outcome == StepOutcome.SWITCH:  # a migrate before its signal: take it
                self._migrated = max(self._migrated, result.campaign_version)
                return False
            if result.outcome == StepOutcome.CAPPED:
                refused = await self._capped(step, result.reason or "", result.next_free_at)
                if refused is not None:
                    verdict = Verdict(Decision.SKIPPED, verdict.met, refused, verdict.evidence)
                    skip_reason = refused
                elif self._switch_due():
                    self._unhold()
                    return False  # published while held: decided again under the new version
                continue  # skip recorded, or the send tried again (its window still applies)
            if not self._pause_outlives_send or self._state.status_version == status_asked:
                self._state.paused = False  # a pause the database held it for, now lifted
            self._state.current_step = step.step_order
            self._state.progress.append(
                StepProgress(
                    step.step_id,
                    step.step_order,
                    verdict.decision,
                    verdict.met,
                    workflow.now().isoformat(),
                    result.delivery_id,
                    reason=verdict.reason,
                    evidence=verdict.evidence,
                )
            )
            if not self._database_led:
                workflow.upsert_search_attributes([search.DRIP_STEP.value_set(step.step_order)])
            return True
        return True

    async def _settle(self, step: StepPlan) -> None:
        """From JOURNEYS on, before a step is decided: read the product events its condition
        names, and with `wait_seconds`, wait until its outcome is settled — the thing happens
        (a positive condition is met, a negative one fails) — or the wait runs out, or the
        journey ends. Settled before the step fell due: no wait. A pause does not stop a wait
        under way; it holds the step once decided (one paused as it fell due waits on resume)."""
        condition = step.condition
        if not self._journeys or condition is None:
            return
        if condition.event is not None:
            await self._load_tracked([condition.event], f"step {step.step_order}")
        if not condition.wait_seconds or self._happened(condition) or self._state.exit:
            return
        until = workflow.now() + timedelta(seconds=condition.wait_seconds)
        words = conditions.describe_condition(condition, self._step_orders())
        self._waiting(
            WaitingKind.WAIT_UNTIL, step, until,
            f"step {step.step_order} waits until {conditions.utc_text(until)} for {words}",
            condition=words,
        )  # fmt: skip
        try:
            await workflow.wait_condition(
                lambda: (
                    self._state.exit is not None
                    or bool(self._happened(condition))
                    or self._switch_due()
                ),
                timeout=condition.wait_seconds,
                timeout_summary=f"step {step.step_order}: wait for {words}",
            )
        except TimeoutError:
            if condition.event is not None:  # decided as it stands: a lost signal still counts
                await self._load_tracked([condition.event], f"step {step.step_order}")

    def _decide(self, step: StepPlan) -> Verdict:
        condition = step.condition
        if condition is None:
            return Verdict(Decision.SENT, None, "sent: no condition", [])
        evidence = self._happened(condition)
        met = bool(evidence) if condition.type in POSITIVE_CONDITIONS else not evidence
        if met:
            decision = Decision.SENT
        else:
            decision = Decision.ALTERNATIVE if step.has_alternative else Decision.SKIPPED
        reason = conditions.reason(
            condition, met, step.has_alternative, evidence, self._step_orders()
        )
        return Verdict(decision, met, reason, evidence)

    def _happened(self, condition: ConditionPlan) -> list[Evidence]:
        """The events that make a condition's thing happen (a click implies an open; human
        engagement only; product events since the enrollment), oldest first."""
        if condition.type in (ConditionType.PERFORMED, ConditionType.NOT_PERFORMED):
            if condition.event is None:
                return []
            return [
                Evidence(e.event_id, e.name, e.occurred_at)
                for e in sorted(self._state.tracked.values(), key=lambda e: e.occurred_at)
                if conditions.event_counts(
                    e, condition.event, self._since, condition.where, condition.match,
                    self._input.trigger,
                )
            ]  # fmt: skip
        engagement = self._state.engagement.get(condition.step_id, [])
        if condition.type in (ConditionType.OPENED, ConditionType.NOT_OPENED):
            return list(engagement)
        clicks = [e for e in engagement if e.type == EventType.CLICK]
        if condition.url:
            return [e for e in clicks if e.url == _normalise_url(condition.url)]
        return clicks

    async def _load_tracked(self, names: list[str], what: str) -> None:
        """Read back the person's tracked events of these names since the enrollment: those
        tracked before the journey started, or whose signal was lost, count too."""
        events = await self._bookkeeping(
            ActivityName.LOAD_TRACKED_EVENTS,
            TrackedEventsQuery(
                self._input.email, sorted(names), self._since.isoformat(),
                self._input.enrollment_id,
            ),
            DB_TIMEOUT,
            list[ProductEvent],
            summary=f"{what}: load tracked {', '.join(sorted(names))}",
        )  # fmt: skip
        for event in events:
            self._remember(event)

    def _remember(self, event: ProductEvent) -> None:
        if event.event_id in self._state.tracked:
            return  # signalled and read back, or signalled twice: each event counts once
        self._state.tracked[event.event_id] = event
        self._check_goal()

    def _check_goal(self) -> None:
        """A goal event (matching its `where`, since the enrollment) with `exit` ends the
        journey at once as converted. Its conversion row is written where it was tracked."""
        goal = self._plan.goal if self._plan is not None else None
        if goal is None or not goal.exit or self._state.exit is not None:
            return
        for event in sorted(self._state.tracked.values(), key=lambda e: e.occurred_at):
            if conditions.event_counts(event, goal.event, self._since, goal.where):
                at = conditions.utc_text(conditions.parse_utc(event.occurred_at))
                self._end(JourneyStatus.CONVERTED, f"goal {goal.event} at {at} ({event.event_id})")
                return

    def _step_orders(self) -> dict[int, int]:
        steps = self._plan.steps if self._plan is not None else []
        return {s.step_id: s.step_order for s in steps}

    def _waiting(
        self,
        kind: WaitingKind | None,
        step: StepPlan | None = None,
        until: datetime | None = None,
        reason: str = "",
        condition: str | None = None,
        zone: str | None = None,
    ) -> None:
        """What the journey waits for now (None: nothing), also its current details in the
        Temporal UI."""
        if kind is None or step is None:
            self._state.waiting_for = None
        else:
            self._state.waiting_for = WaitingFor(
                kind, reason, until.isoformat() if until else None, step.step_order, condition,
                zone,
            )  # fmt: skip
        workflow.set_current_details(reason)

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
        if event.type not in (EventType.OPEN, EventType.CLICK):
            return
        url = _normalise_url(event.url or "") if event.type == EventType.CLICK else None
        if event.type == EventType.OPEN:
            self._state.opened.add(event.step_id)
        else:
            self._state.clicked.setdefault(event.step_id, set()).add(url or "")
        self._state.engagement.setdefault(event.step_id, []).append(
            Evidence(event.event_id, event.type, workflow.now().isoformat(), event.step_id, url)
        )

    @workflow.signal
    def on_tracked(self, event: ProductEvent) -> None:
        """A product event the person performed (POST /api/track), for the journeys whose
        conditions or goal name it; deduplicated by event id."""
        if self._journeys:  # older journeys have no product conditions nor goals
            self._remember(event)

    @workflow.signal
    def remove(self, reason: str) -> None:
        self._end(JourneyStatus.REMOVED, reason)

    @workflow.signal
    def campaign_status(self, status: str) -> None:
        """The unversioned form, as histories recorded before CampaignChange carry it."""
        self._apply_status(CampaignStatus(status))

    @workflow.signal
    def version_published(self, change: VersionChange) -> None:
        """A campaign version published with `migrate` (switched to at the next step boundary,
        from VERSIONS on; older journeys stay on their plan) or `exit` (the journey ends). A
        version no newer than the journey's own plan is not news."""
        if self._plan is not None and change.version <= self._plan.version:
            return
        if change.policy == VersionPolicy.EXIT:
            self._end(JourneyStatus.EXITED, exit_reason(change.version))
        elif change.policy == VersionPolicy.MIGRATE and self._versions:
            self._migrated = max(self._migrated, change.version)

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
            waiting_for=self._state.waiting_for if self._state.exit is None else None,
            version=int(self._version),
            campaign_version=self._plan.version if self._plan is not None else 0,
        )


def _normalise_url(url: str) -> str:
    return url.strip().rstrip("/")


def _ids(plan: JourneyPlan) -> list[int]:
    return [step.step_id for step in plan.steps]
