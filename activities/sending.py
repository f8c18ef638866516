"""The send activity: check, render, track, take the lease, hand to the transport, record.

At most once per (enrollment, step), under every fault but one (docs/reliability.md):

- the delivery row is unique per step; `sent`, `uncertain` and `failed` are final;
- `sending` is a lease (`send_started_at` + the send deadline + a margin): a retry that finds
  another attempt's fresh lease waits it out; only an expired one (a dead attempt) is taken over;
- just before the end-of-data terminator is written, the row is durably marked `handing_over`
  (the point of no return): a dead attempt that had not got there is simply sent again; one that
  had may have been accepted by the server, and DRIP_UNCERTAIN_SENDS decides: `hold` records it
  `uncertain` and moves on (never twice), `resend` sends it again (never lost);
- once the server answered 250, the `sent` write is retried until it commits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import bindparam, case, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.guards import gate
from activities.ids import new_delivery_id
from domain.journey import (
    ActivityName,
    Decision,
    JourneyStatus,
    StepInput,
    StepOutcome,
    StepResult,
)
from domain.journey import DeliveryStatus as Status
from domain.resend import RESEND_DELIVERY, ResendDelivery, ResendRefused
from mail.compose import RenderFailed, compose
from mail.message import Envelope, relay_provider
from mail.mime import WireMessage
from mail.tokens import Tokens
from mail.transport import (
    MessageRefused,
    OutcomeUnknown,
    RecipientRejected,
    SenderMisconfigured,
    Transport,
    TransportError,
)
from observability.sends import report_send, stopped_outcome
from services import messages, variants, webhooks_out
from services.errors import Conflict, NotFound
from services.events import Events
from services.frequency import count_from_send, release, reserve
from settings import Settings
from storage import tracked_events
from storage.counters import Metric, bump, bump_variant
from storage.db import session_scope
from storage.inserts import insert_ignoring_conflicts
from storage.models import (
    Campaign,
    Delivery,
    Enrollment,
    FrequencyCap,
    Step,
    Template,
    TrackedEvent,
    utcnow,
)
from storage.suppression import find_suppression
from storage.versions import step_content

log = logging.getLogger(__name__)


HEARTBEAT_EVERY_SECONDS = 5.0
# A lease outlives the longest an alive attempt can hold it (the send deadline), by this much:
# slack for clocks of different workers and for the lease's own commit.
LEASE_MARGIN_SECONDS = 15.0
# Between tries of the `sent` write after the server accepted the message.
RECORD_RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)


FINAL = {Status.SENT, Status.UNCERTAIN, Status.FAILED, Status.SKIPPED, Status.HOLDOUT}

# The hot path's statements, built once on the tables with bound parameters: built per message,
# their construction and cache keys cost more of the worker's CPU than running them
# (tools/send_db_bench.py, docs/performance.md).
_DELIVERIES = Delivery.__table__  # type: ignore[attr-defined]
_ENROLLMENTS = Enrollment.__table__  # type: ignore[attr-defined]
_LOAD = (
    # The last column: whether a frequency cap is set (its one row), so that without one the
    # send takes no slot and opens no second session to learn it.
    sa_select(Enrollment, Campaign, Step, Delivery, col(FrequencyCap.id))
    .outerjoin(Campaign, col(Campaign.id) == col(Enrollment.campaign_id))
    .outerjoin(Step, col(Step.id) == bindparam("step_id"))
    .outerjoin(
        Delivery,
        (col(Delivery.enrollment_id) == col(Enrollment.id))
        & (col(Delivery.step_id) == bindparam("step_id")),
    )
    .outerjoin(FrequencyCap, col(FrequencyCap.id) == 1)
    .where(col(Enrollment.id) == bindparam("enrollment_id"))
)
_REACH_STEP = (
    update(_ENROLLMENTS)
    .where(_ENROLLMENTS.c.id == bindparam("enrollment_id"))
    .values(
        current_step=case(
            (_ENROLLMENTS.c.current_step < bindparam("step_order"), bindparam("step_order")),
            else_=_ENROLLMENTS.c.current_step,
        )
    )
)
_HAND_OVER = (
    update(_DELIVERIES)
    .where(
        _DELIVERIES.c.id == bindparam("delivery_id"),
        _DELIVERIES.c.status == Status.SENDING,
        _DELIVERIES.c.send_started_at == bindparam("lease"),
    )
    .values(status=Status.HANDING_OVER)
)
_SENT = (
    update(_DELIVERIES)
    .where(
        _DELIVERIES.c.id == bindparam("delivery_id"),
        _DELIVERIES.c.status.in_([Status.SENDING, Status.HANDING_OVER]),
    )
    .values(status=Status.SENT, sent_at=bindparam("now"))
    .returning(
        _DELIVERIES.c.campaign_id,
        _DELIVERIES.c.step_id,
        _DELIVERIES.c.decision,
        _DELIVERIES.c.enrollment_id,
        _DELIVERIES.c.sent_at,
        _DELIVERIES.c.variant,
    )
)


class UncertainSends(StrEnum):
    HOLD = "hold"  # at most once: never twice, an uncertain message is listed for an operator
    RESEND = "resend"  # at least once: never lost, an uncertain message may arrive twice


@contextlib.asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    """Heartbeat for the whole attempt, preparation included (a slow database must not make
    Temporal start a second attempt beside this one), so a worker killed mid-send is noticed
    within the heartbeat timeout, while a slow but alive one is not."""

    async def beat() -> None:
        while True:  # none at once: the heartbeat timeout runs from the attempt's start anyway,
            await asyncio.sleep(HEARTBEAT_EVERY_SECONDS)  # and each costs a server write
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # SQLite: naive UTC


@dataclass
class Loaded:
    """What an attempt read, before any lease: the message is composed from it outside any
    write transaction."""

    delivery_id: str
    new: bool  # no row yet: the lease inserts it
    enrollment: Enrollment
    campaign: Campaign
    step: Step
    subject: str
    template: Template
    trigger: TrackedEvent | None = None  # the tracked event that enrolled the journey
    variant: variants.Variant | None = None  # the step's A/B variant this journey gets
    cap_set: bool = False  # a frequency cap is set: the send takes a slot under it


@dataclass
class PreparedSend:
    delivery_id: str
    message: WireMessage
    envelope: Envelope
    lease: datetime  # this attempt's send_started_at: its lease token
    release_to: str = "pending"  # the status a definite refusal gives the row back


class LeaseLost(Exception):
    """This attempt's lease was taken over or ran out before the point of no return."""


class LeaseHeld(Exception):
    def __init__(self, remaining: float) -> None:
        super().__init__(f"another attempt holds the send lease for {remaining:.1f} s more")
        self.remaining = remaining


class NotResendable(Conflict):
    """An operator's resend of a delivery that is not `uncertain`, or of a suppressed address."""


class SendingActivities:
    def __init__(self, settings: Settings, engine: Engine, transport: Transport) -> None:
        self.settings = settings
        self.engine = engine
        self.transport = transport
        self.tokens = Tokens(settings.secret_key)
        self.uncertain = UncertainSends(settings.uncertain_sends)
        self.events = Events(engine, settings.reputation_limits)  # store only: SMTP bounces
        self.lease_seconds = settings.send_deadline_seconds + LEASE_MARGIN_SECONDS
        # Its own threads for recording sends: on the shared default executor that commit
        # queued behind the next sends' preparation, and until it commits, a crash would send
        # the message again.
        self._recorder = concurrent.futures.ThreadPoolExecutor(4, "record-sent")

    def close(self) -> None:
        self._recorder.shutdown(wait=False)

    @activity.defn(name=ActivityName.SEND_STEP)
    async def send_step(self, step: StepInput) -> StepResult:
        async with _heartbeating():
            try:
                return await self._attempt(step)
            except LeaseHeld as exc:
                # Retryable, after the lease: an attempt that may still be sending is never
                # doubled by this one.
                raise ApplicationError(
                    str(exc),
                    type="SendLeaseHeld",
                    next_retry_delay=timedelta(seconds=exc.remaining + 1),
                ) from exc

    async def _attempt(self, step: StepInput) -> StepResult:
        prepared = await asyncio.to_thread(self._prepare, step)
        if isinstance(prepared, PreparedSend):
            return await self._hand_over(prepared)
        result, outcome = prepared
        if outcome is not None:
            report_send(outcome, result.delivery_id)
        return result

    def _prepare(self, step: StepInput) -> PreparedSend | tuple[StepResult, str | None]:
        """The reads, the message composed outside any transaction, the lease: on one worker
        thread, one hop from the event loop instead of two. Nothing to send: the step's result
        and the outcome to report (None: a holdout, counted by hold_out)."""
        loaded = self._load(step)
        if isinstance(loaded, StepResult):
            if loaded.outcome == StepOutcome.SWITCH:  # never sent: its cap slot is free again
                release(self.engine, step.enrollment_id, step.step_id)
            return loaded, stopped_outcome(loaded)
        capped = self._reserve_cap_slot(step, loaded)
        if capped is not None:
            return capped, stopped_outcome(capped)
        if loaded.variant is not None and loaded.variant.holdout:  # measured, never sent
            held = variants.hold_out(
                self.engine, step, loaded.step, loaded.delivery_id, loaded.new, loaded.variant
            )
            return held, None
        message, envelope, links = self._compose(
            loaded.delivery_id,
            loaded.enrollment,
            loaded.campaign,
            loaded.step,
            loaded.subject,
            loaded.template,
            loaded.trigger,
        )
        prepared = self._lease(step, loaded, message, envelope, links)
        if isinstance(prepared, StepResult):
            return prepared, prepared.reason or stopped_outcome(prepared)
        return prepared

    def _reserve_cap_slot(self, step: StepInput, loaded: Loaded) -> StepResult | None:
        """From CAP_IN_SEND on, the step's slot under the frequency cap, taken by the attempt
        that sends (a retry finds it taken, and is granted again); CAPPED when the cap is full."""
        if step.on_cap is None or not loaded.cap_set:
            return None
        reservation = reserve(
            self.engine,
            email=loaded.enrollment.email,
            enrollment_id=step.enrollment_id,
            step_id=step.step_id,
            campaign_id=loaded.enrollment.campaign_id,
            at=utcnow(),
            on_cap=step.on_cap,
        )
        if reservation.granted:
            return None
        frees = reservation.next_free_at
        return StepResult(
            StepOutcome.CAPPED,
            reason=reservation.reason,
            next_free_at=frees.isoformat() if frees is not None else None,
        )

    async def _hand_over(self, prepared: PreparedSend) -> StepResult:
        delivery_id = prepared.delivery_id
        passed = False

        async def no_return() -> None:
            nonlocal passed
            loop = asyncio.get_running_loop()  # not retried: abandoning here is still safe
            await loop.run_in_executor(
                self._recorder, self._mark_handing_over, delivery_id, prepared.lease
            )
            passed = True

        try:
            # The deadline keeps an attempt inside its lease and its activity timeout: a
            # stalled SMTP server can then never overlap with the retry.
            await asyncio.wait_for(
                self.transport.send(prepared.message, prepared.envelope, no_return),
                timeout=self.settings.send_deadline_seconds,
            )
        except (OutcomeUnknown, TimeoutError) as exc:
            if not passed:  # timed out before the terminator: the server has nothing
                await self._release(prepared)
                deadline = self.settings.send_deadline_seconds
                raise TransportError(f"no answer within {deadline} s") from exc
            return await self._outcome_unknown(prepared, str(exc))
        except RecipientRejected as exc:
            await asyncio.to_thread(
                self.events.record_smtp_bounce, delivery_id, exc.code, exc.smtp_message
            )
            report_send("bounced", delivery_id)
            return StepResult(
                StepOutcome.ENDED,
                delivery_id=delivery_id,
                exit_status=JourneyStatus.BOUNCED,
                reason=str(exc),
            )
        except MessageRefused as exc:
            await self._record(self._mark_failed, delivery_id, str(exc))
            report_send("failed", delivery_id)
            return StepResult(StepOutcome.DONE, delivery_id=delivery_id, reason=str(exc))
        except SenderMisconfigured as exc:
            # Our own setup is wrong: blame nobody, keep retrying, and say so loudly.
            log.error("SMTP refused our sender configuration (retrying): %s", exc)
            await self._release(prepared)
            raise ApplicationError(str(exc), type="SenderMisconfigured") from exc
        except Exception:
            await self._release(prepared)  # refused: nothing was accepted
            raise
        await self._record(self._mark_sent, delivery_id)
        report_send("sent", delivery_id)
        return StepResult(StepOutcome.DONE, delivery_id=delivery_id)

    async def _outcome_unknown(self, prepared: PreparedSend, why: str) -> StepResult:
        """This attempt wrote the terminator and got no answer: the server may have it."""
        delivery_id = prepared.delivery_id
        if self.uncertain == UncertainSends.RESEND:
            await self._release(prepared)
            raise TransportError(f"outcome unknown, sending again: {why}")
        await self._record(self._mark_uncertain, delivery_id)
        report_send("uncertain", delivery_id)
        return StepResult(StepOutcome.DONE, delivery_id=delivery_id, reason="uncertain")

    async def _record(self, write: Callable[..., None], *args: object) -> None:
        """Run a recording write on the recorder's threads until it commits: once the message
        may be on its way, failing this attempt would send it again."""
        loop = asyncio.get_running_loop()
        for tries in itertools.count():
            try:
                await loop.run_in_executor(self._recorder, write, *args)
                return
            except Exception as exc:
                pause = RECORD_RETRY_SECONDS[min(tries, len(RECORD_RETRY_SECONDS) - 1)]
                log.warning("recording %s failed (retrying in %s s): %s", write.__name__,
                            pause, exc)  # fmt: skip
                await asyncio.sleep(pause)

    async def _release(self, prepared: PreparedSend) -> None:
        """Give the lease back after a definite refusal, so the retry need not wait it out.
        Best effort: a lease not given back only expires."""
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._release_lease, prepared)

    def _load(self, step: StepInput) -> Loaded | StepResult:
        """Reads only, no write lock: the gate, the row, what the message is made of."""
        with session_scope(self.engine) as session:
            # One statement for the enrollment, its campaign, the step and this step's delivery
            # row: loaded into the session, where gate() and _materials() find them unasked.
            found = session.execute(
                _LOAD, {"step_id": step.step_id, "enrollment_id": step.enrollment_id}
            ).first()
            enrollment, campaign, delivery = (
                (found[0], found[1], found[3]) if found is not None else (None, None, None)
            )
            stop = gate(session, enrollment)
            if stop is not None:
                return stop
            assert enrollment is not None
            if delivery is not None:
                stop = self._judge(delivery)
                if stop is not None:
                    return stop
            elif step.switchable and step.campaign_version and campaign is not None:
                # Migrated (publish set the row to the live version) before the journey heard.
                now_on = enrollment.campaign_version or campaign.live_version
                if now_on > step.campaign_version:
                    return StepResult(
                        StepOutcome.SWITCH, reason=f"migrated to version {now_on}",
                        campaign_version=now_on,
                    )  # fmt: skip
            assert found is not None
            return self._materials(session, enrollment, step, delivery, found[4] is not None)

    @staticmethod
    def _materials(
        session: Session,
        enrollment: Enrollment,
        step: StepInput,
        delivery: Delivery | None,
        cap_set: bool = False,
    ) -> Loaded:
        campaign = session.get(Campaign, enrollment.campaign_id)
        plan_step = step_content(session, enrollment, step.step_id, step.campaign_version)
        assert campaign is not None and plan_step is not None
        alternative = step.decision == Decision.ALTERNATIVE
        variant, subject, template_id = variants.message_of(
            session,
            plan_step,
            enrollment.email,
            alternative,
            delivery.variant if delivery else None,
        )
        template = session.get(Template, template_id)
        if template is None:
            raise ApplicationError(
                f"template of step {plan_step.id} is gone", type="MissingTemplate"
            )
        return Loaded(
            delivery.id if delivery else new_delivery_id(),
            delivery is None,
            enrollment,
            campaign,
            plan_step,
            subject,
            template,
            tracked_events.trigger_of(session, enrollment),
            variant,
            cap_set,
        )

    @activity.defn(name=RESEND_DELIVERY)
    async def resend_delivery(self, request: ResendDelivery) -> str:
        """The resend workflow's one attempt; a refusal is final (the operator is told why)."""
        async with _heartbeating():
            try:
                return await self.resend(request.delivery_id)
            except NotFound as exc:
                raise ApplicationError(
                    str(exc), type=ResendRefused.NOT_FOUND, non_retryable=True
                ) from exc
            except NotResendable as exc:
                raise ApplicationError(
                    str(exc), type=ResendRefused.CONFLICT, non_retryable=True
                ) from exc

    async def resend(self, delivery_id: str) -> str:
        """An operator's resend of an `uncertain` delivery (POST /api/deliveries/{id}/resend),
        through the same lease and point of no return; its journey has moved on already.
        Returns the delivery's status after it: sent, failed, bounced or uncertain again."""
        loaded, step = await asyncio.to_thread(self._load_for_resend, delivery_id)
        message, envelope, links = self._compose(
            delivery_id, loaded.enrollment, loaded.campaign, loaded.step, loaded.subject,
            loaded.template, loaded.trigger,
        )  # fmt: skip
        lease = await asyncio.to_thread(self._lease_uncertain, delivery_id, message, links)
        prepared = PreparedSend(delivery_id, message, envelope, lease, Status.UNCERTAIN)
        with contextlib.suppress(TransportError, ApplicationError):
            await self._hand_over(prepared)  # refused for now: uncertain still, retry later
        with session_scope(self.engine) as session:
            row = session.get(Delivery, delivery_id)
            assert row is not None
            return row.status

    def _load_for_resend(self, delivery_id: str) -> tuple[Loaded, StepInput]:
        with session_scope(self.engine) as session:
            delivery = session.get(Delivery, delivery_id)
            if delivery is None:
                raise NotFound("delivery", delivery_id)
            if delivery.status != Status.UNCERTAIN:
                raise NotResendable(f"delivery {delivery_id} is {delivery.status}, not uncertain")
            enrollment = session.get(Enrollment, delivery.enrollment_id)
            if enrollment is None:
                raise NotResendable(f"delivery {delivery_id}: its recipient was erased")
            suppression = find_suppression(session, enrollment.email)
            if suppression is not None:
                raise NotResendable(f"{enrollment.email} is suppressed: {suppression.reason}")
            step = StepInput(enrollment.id or 0, delivery.step_id, delivery.step_order,
                             Decision(delivery.decision), delivery.condition_met)  # fmt: skip
            return self._materials(session, enrollment, step, delivery), step

    def _lease_uncertain(
        self, delivery_id: str, message: WireMessage, links: list[str]
    ) -> datetime:
        now = utcnow()
        with session_scope(self.engine) as session:
            taken = session.execute(
                update(Delivery)
                .where(col(Delivery.id) == delivery_id, col(Delivery.status) == Status.UNCERTAIN)
                .values(
                    status=Status.SENDING,
                    send_started_at=now,
                    links=links,
                    subject=message.subject,
                )  # fmt: skip
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                raise NotResendable(f"delivery {delivery_id} is no longer uncertain")
            row = session.get(Delivery, delivery_id)
            assert row is not None
            bump(session, row.campaign_id, row.step_id, Metric.UNCERTAIN, -1)
        return now

    def _judge(self, delivery: Delivery) -> StepResult | None:
        """What an existing row says about this attempt: None when it may send."""
        if delivery.status in FINAL:
            return StepResult(StepOutcome.DONE, delivery_id=delivery.id)
        if delivery.status == Status.BOUNCED:  # e.g. its suppression lifted since
            return StepResult(StepOutcome.ENDED, delivery_id=delivery.id,
                              exit_status=JourneyStatus.BOUNCED, reason=delivery.error)  # fmt: skip
        if delivery.status in (Status.SENDING, Status.HANDING_OVER):
            assert delivery.send_started_at is not None
            expires = _aware(delivery.send_started_at) + timedelta(seconds=self.lease_seconds)
            remaining = (expires - utcnow()).total_seconds()
            if remaining > 0:
                raise LeaseHeld(remaining)
        return None

    @staticmethod
    def _row(enrollment_id: int, step: StepInput) -> SelectOfScalar[Delivery]:
        return select(Delivery).where(
            Delivery.enrollment_id == enrollment_id, Delivery.step_id == step.step_id
        )

    def _lease(  # noqa: PLR0913
        self,
        step: StepInput,
        loaded: Loaded,
        message: WireMessage,
        envelope: Envelope,
        links: list[str],
    ) -> PreparedSend | StepResult:
        """One short write: take the lease (inserting the row on a first attempt), or find that
        another attempt has it, or — past the point of no return — hold the message."""
        now = utcnow()
        subject = message.subject
        message_id = message.message_id
        enrollment = loaded.enrollment  # as _load read it; the row is updated, not re-read
        with session_scope(self.engine) as session:
            moved = session.execute(
                _REACH_STEP, {"enrollment_id": step.enrollment_id, "step_order": step.step_order}
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]  # erased meanwhile: retried,
                raise ApplicationError("enrollment gone", type="EnrollmentGone")  # the gate ends it
            if loaded.new:
                row = Delivery(
                    id=loaded.delivery_id,
                    enrollment_id=enrollment.id or 0,
                    campaign_id=enrollment.campaign_id,
                    step_id=step.step_id,
                    step_order=step.step_order,
                    decision=step.decision,
                    condition_met=step.condition_met,
                    status=Status.SENDING,
                    subject=subject,
                    message_id=message_id,
                    links=links,
                    send_started_at=now,
                    variant=loaded.variant.name if loaded.variant else None,
                )
                if insert_ignoring_conflicts(session, Delivery, [row.model_dump()]):
                    bump(session, row.campaign_id, row.step_id, Metric.REACHED)
                    variants.count_given(session, loaded.step, row)
                    return PreparedSend(loaded.delivery_id, message, envelope, now)
                # A concurrent attempt made the row first: its lease, or compose again.
                theirs = session.exec(self._row(enrollment.id or 0, step)).one()
                stop = self._judge(theirs)
                if stop is not None:
                    return stop
                raise ApplicationError("delivery row made concurrently", type="Raced")
            expired = now - timedelta(seconds=self.lease_seconds)
            takeable = [Status.PENDING, Status.SENDING]
            if self.uncertain == UncertainSends.RESEND:
                takeable.append(Status.HANDING_OVER)
            taken = session.execute(
                update(Delivery)
                .where(
                    col(Delivery.id) == loaded.delivery_id,
                    col(Delivery.status).in_(takeable),
                    (col(Delivery.status) == Status.PENDING)
                    | (col(Delivery.send_started_at) < expired),
                )
                .values(
                    status=Status.SENDING,
                    send_started_at=now,
                    subject=subject,
                    message_id=message_id,
                    links=links,
                )
            )
            if taken.rowcount == 1:  # type: ignore[attr-defined]
                return PreparedSend(loaded.delivery_id, message, envelope, now)
            delivery = session.get(Delivery, loaded.delivery_id)
            assert delivery is not None
            stop = self._judge(delivery)  # final by now, or a fresh lease (raises)
            if stop is not None:
                return stop
            # An expired lease past the point of no return, and we hold such messages.
            assert delivery.status == Status.HANDING_OVER
            self._set_uncertain(session, delivery)
            log.warning("delivery %s: its attempt died past the point of no return; held as "
                        "uncertain (DRIP_UNCERTAIN_SENDS=hold)", delivery.id)  # fmt: skip
            return StepResult(StepOutcome.DONE, delivery_id=delivery.id, reason="uncertain")

    def _mark_handing_over(self, delivery_id: str, lease: datetime) -> None:
        # Urgent: the message waits on the wire for this commit.
        with session_scope(self.engine, urgent=True) as session:
            held = session.execute(_HAND_OVER, {"delivery_id": delivery_id, "lease": lease})
            if held.rowcount != 1:  # type: ignore[attr-defined]
                raise LeaseLost(delivery_id)
        if (utcnow() - lease).total_seconds() > self.lease_seconds:
            raise LeaseLost(delivery_id)  # too late: another attempt may take it over now

    def _release_lease(self, prepared: PreparedSend) -> None:
        with session_scope(self.engine) as session:
            released = session.execute(
                update(Delivery)
                .where(
                    col(Delivery.id) == prepared.delivery_id,
                    col(Delivery.status).in_([Status.SENDING, Status.HANDING_OVER]),
                    col(Delivery.send_started_at) == prepared.lease,
                )
                .values(status=prepared.release_to)
            )
            if released.rowcount == 1 and prepared.release_to == Status.UNCERTAIN:  # type: ignore[attr-defined]
                row = session.get(Delivery, prepared.delivery_id)
                assert row is not None
                bump(session, row.campaign_id, row.step_id, Metric.UNCERTAIN)

    def _mark_uncertain(self, delivery_id: str) -> None:
        with session_scope(self.engine, urgent=True) as session:
            delivery = session.get(Delivery, delivery_id, with_for_update=True)
            if delivery is None:  # erased meanwhile: nothing left to record
                return
            if delivery.status not in FINAL:
                self._set_uncertain(session, delivery)

    @staticmethod
    def _set_uncertain(session: Session, delivery: Delivery) -> None:
        delivery.status = Status.UNCERTAIN
        delivery.error = "the attempt ended past the point of no return: maybe accepted"
        session.add(delivery)
        bump(session, delivery.campaign_id, delivery.step_id, Metric.UNCERTAIN)

    def _mark_failed(self, delivery_id: str, reason: str) -> None:
        with session_scope(self.engine) as session:
            delivery = session.get(Delivery, delivery_id, with_for_update=True)
            if delivery is None:  # erased meanwhile: nothing left to record
                return
            if delivery.status not in FINAL:
                bump(session, delivery.campaign_id, delivery.step_id, Metric.FAILED)
            delivery.status = Status.FAILED
            delivery.error = reason
            session.add(delivery)

    def _compose(
        self,
        delivery_id: str,
        enrollment: Enrollment,
        campaign: Campaign,
        step: Step,
        subject: str,
        template: Template,
        trigger: TrackedEvent | None,
    ) -> tuple[WireMessage, Envelope, list[str]]:
        draft = messages.draft(
            delivery_id=delivery_id,
            email=enrollment.email,
            fields=enrollment.fields,
            campaign=campaign,
            step=step,
            subject=subject,
            template=template,
            default_from=self.settings.from_email,
            trigger=trigger,
        )
        try:
            composed = compose(
                draft,
                self.tokens,
                self.settings.public_url,
                tracking=self.settings.tracking,
                unsubscribe_mailto=self.settings.unsubscribe_mailto,
                provider=relay_provider(self.settings.smtp_provider, self.settings.smtp_url),
            )
        except RenderFailed as exc:  # a template error an operator can fix: retried, not lost
            log.error("template %s failed to render: %s", template.id, exc)
            raise ApplicationError(f"template {template.id}: {exc}", type="RenderError") from exc
        return composed.message, composed.envelope, composed.links

    def _mark_sent(self, delivery_id: str) -> None:
        # Urgent: until this commits, a retry cannot know the message went out.
        with session_scope(self.engine, urgent=True) as session:
            # The usual case in one statement: this attempt's row, sending until now.
            sent = session.execute(_SENT, {"delivery_id": delivery_id, "now": utcnow()}).first()
            if sent is not None:
                count_from_send(session, sent.enrollment_id, sent.step_id, sent.sent_at)
                alternative = sent.decision == Decision.ALTERNATIVE
                bump(session, sent.campaign_id, sent.step_id,
                     Metric.ALTERNATIVE_SENT if alternative else Metric.SENT)  # fmt: skip
                webhooks_out.step_decided(session, delivery_id, sent.decision)  # events out
                bump_variant(session, sent.campaign_id, sent.step_id, sent.variant, Metric.SENT)
                return
            delivery = session.get(Delivery, delivery_id, with_for_update=True)
            if delivery is None:  # erased meanwhile: nothing left to record
                return
            if delivery.status != Status.SENT:  # a retried attempt counts nothing twice
                alternative = delivery.decision == Decision.ALTERNATIVE
                metric = Metric.ALTERNATIVE_SENT if alternative else Metric.SENT
                bump(session, delivery.campaign_id, delivery.step_id, metric)
                webhooks_out.step_decided(session, delivery.id, delivery.decision)  # events out
                bump_variant(session, delivery.campaign_id, delivery.step_id, delivery.variant,
                             Metric.SENT)  # fmt: skip
            if delivery.status == Status.UNCERTAIN:  # a slow attempt proved it went out
                bump(session, delivery.campaign_id, delivery.step_id, Metric.UNCERTAIN, -1)
            delivery.status = Status.SENT
            delivery.sent_at = utcnow()
            session.add(delivery)
            count_from_send(session, delivery.enrollment_id, delivery.step_id, delivery.sent_at)
