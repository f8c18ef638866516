"""The send activity: check, render, track, hand to the transport, record.

At most once per (enrollment, step): the delivery row is unique per step and marked `sent` right
after the transport accepts the message, so a retry of a sent step sends nothing. The one window
for a duplicate is between the SMTP server accepting DATA and that row being committed (README).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage

from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.guards import gate
from activities.ids import new_delivery_id
from domain.journey import Decision, JourneyStatus, StepInput, StepOutcome, StepResult
from mail.compose import Draft, RenderFailed, compose
from mail.message import Envelope, relay_provider
from mail.tokens import Tokens
from mail.transport import RecipientRejected, SenderMisconfigured, Transport, TransportError
from observability.sends import report_send, stopped_outcome
from settings import Settings
from storage.counters import Metric, bump, reach_milestones
from storage.db import session_scope
from storage.models import (
    Campaign,
    Delivery,
    Enrollment,
    Event,
    Step,
    Suppression,
    Template,
    utcnow,
)
from storage.reputation import guard_campaign
from storage.upsert import insert_ignoring_conflicts

log = logging.getLogger(__name__)


HEARTBEAT_EVERY_SECONDS = 5.0


@contextlib.asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    """Heartbeat while the transport works, so a worker killed mid-send is noticed within the
    heartbeat timeout (not the whole activity timeout), while a slow but alive one is not."""

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


@dataclass
class PreparedSend:
    delivery_id: str
    message: EmailMessage
    envelope: Envelope


class SendingActivities:
    def __init__(self, settings: Settings, engine: Engine, transport: Transport) -> None:
        self.settings = settings
        self.engine = engine
        self.transport = transport
        self.tokens = Tokens(settings.secret_key)
        # Its own threads for recording sends: on the shared default executor that commit
        # queued behind the next sends' preparation, and until it commits, a crash would send
        # the message again.
        self._recorder = concurrent.futures.ThreadPoolExecutor(4, "record-sent")

    @activity.defn(name="send_step")
    async def send_step(self, step: StepInput) -> StepResult:
        prepared = await asyncio.to_thread(self._prepare, step)
        if isinstance(prepared, StepResult):
            report_send(stopped_outcome(prepared), prepared.delivery_id)
            return prepared
        try:
            async with _heartbeating():
                # The deadline keeps an attempt from outliving its activity timeout: a stalled
                # SMTP server can then never overlap with the retry.
                await asyncio.wait_for(
                    self.transport.send(prepared.message, prepared.envelope),
                    timeout=self.settings.send_deadline_seconds,
                )
        except TimeoutError as exc:
            deadline = self.settings.send_deadline_seconds
            raise TransportError(f"no answer within {deadline} s") from exc
        except RecipientRejected as exc:
            await asyncio.to_thread(self._record_bounce, prepared.delivery_id, exc)
            report_send("bounced", prepared.delivery_id)
            return StepResult(
                StepOutcome.ENDED,
                delivery_id=prepared.delivery_id,
                exit_status=JourneyStatus.BOUNCED,
                reason=str(exc),
            )
        except SenderMisconfigured as exc:
            # Our own setup is wrong: blame nobody, keep retrying, and say so loudly.
            log.error("SMTP refused our sender configuration (retrying): %s", exc)
            raise ApplicationError(str(exc), type="SenderMisconfigured") from exc
        await asyncio.get_running_loop().run_in_executor(
            self._recorder, self._mark_sent, prepared.delivery_id
        )
        report_send("sent", prepared.delivery_id)
        return StepResult(StepOutcome.DONE, delivery_id=prepared.delivery_id)

    def _prepare(self, step: StepInput) -> PreparedSend | StepResult:
        with session_scope(self.engine) as session:
            enrollment = session.get(Enrollment, step.enrollment_id)
            stop = gate(session, enrollment)
            if stop is not None:
                return stop
            assert enrollment is not None
            delivery = self._delivery(session, enrollment, step)
            if delivery.status == "sent":
                return StepResult(StepOutcome.DONE, delivery_id=delivery.id)
            campaign = session.get(Campaign, enrollment.campaign_id)
            plan_step = session.get(Step, step.step_id)
            assert campaign is not None and plan_step is not None
            alternative = step.decision == Decision.ALTERNATIVE
            subject = (plan_step.alt_subject if alternative else None) or plan_step.subject
            template = session.get(
                Template, plan_step.alt_template_id if alternative else plan_step.template_id
            )
            if template is None:
                raise ApplicationError(
                    f"template of step {plan_step.id} is gone", type="MissingTemplate"
                )
            message, envelope, links = self._compose(
                delivery.id, enrollment, campaign, plan_step, subject, template
            )
            delivery.subject = str(message["Subject"])
            delivery.message_id = str(message["Message-ID"]).strip("<>")
            delivery.links = links
            delivery.status = "sending"
            delivery.send_started_at = utcnow()
            enrollment.current_step = max(enrollment.current_step, step.step_order)
            session.add_all([delivery, enrollment])
            return PreparedSend(delivery.id, message, envelope)

    def _delivery(self, session, enrollment: Enrollment, step: StepInput) -> Delivery:  # type: ignore[no-untyped-def]
        query = select(Delivery).where(
            Delivery.enrollment_id == enrollment.id, Delivery.step_id == step.step_id
        )
        delivery = session.exec(query).first()
        if delivery is not None:
            return delivery
        row = Delivery(
            id=new_delivery_id(),
            enrollment_id=enrollment.id or 0,
            campaign_id=enrollment.campaign_id,
            step_id=step.step_id,
            step_order=step.step_order,
            decision=step.decision,
            condition_met=step.condition_met,
        )
        # ON CONFLICT DO NOTHING, not a savepoint: on SQLite a SAVEPOINT after only reads is the
        # outermost transaction, and its RELEASE committed the row apart from its REACHED count
        # (a worker killed in between left the count short for good).
        if insert_ignoring_conflicts(session, Delivery, [row.model_dump()]):
            bump(session, row.campaign_id, row.step_id, Metric.REACHED)
        return session.exec(query).one()  # ours, or the one a concurrent attempt made first

    def _compose(  # type: ignore[no-untyped-def]
        self,
        delivery_id: str,
        enrollment: Enrollment,
        campaign: Campaign,
        step: Step,
        subject: str,
        template: Template,
    ) -> tuple[EmailMessage, Envelope, list[str]]:
        draft = Draft(
            delivery_id=delivery_id,
            email=enrollment.email,
            fields=enrollment.fields,
            campaign_id=campaign.id or 0,
            campaign_name=campaign.name,
            from_email=campaign.from_email or self.settings.from_email,
            from_name=campaign.from_name,
            reply_to=campaign.reply_to,
            step_order=step.step_order,
            step_subject=step.subject,
            subject=subject,
            html=template.html,
            text=template.text,
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
        # Urgent: until this commits, a crash would send the message again.
        with session_scope(self.engine, urgent=True) as session:
            delivery = session.get(Delivery, delivery_id, with_for_update=True)
            assert delivery is not None
            if delivery.status != "sent":  # a retried attempt counts nothing twice
                alternative = delivery.decision == Decision.ALTERNATIVE
                metric = Metric.ALTERNATIVE_SENT if alternative else Metric.SENT
                bump(session, delivery.campaign_id, delivery.step_id, metric)
            delivery.status = "sent"
            delivery.sent_at = utcnow()
            session.add(delivery)

    def _record_bounce(self, delivery_id: str, exc: RecipientRejected) -> None:
        with session_scope(self.engine) as session:
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            enrollment = session.get(Enrollment, delivery.enrollment_id)
            assert enrollment is not None
            delivery.status = "bounced"
            delivery.error = str(exc)
            session.add(delivery)
            reach_milestones(
                session, [(delivery.campaign_id, delivery.step_id, delivery.id, Metric.BOUNCED)]
            )
            if session.get(Suppression, enrollment.email) is None:
                session.add(
                    Suppression(email=enrollment.email, reason="bounce_hard", source="smtp")
                )
            exists = session.exec(
                select(Event).where(Event.provider == "smtp", Event.dedupe_key == delivery_id)
            ).first()
            if exists is None:
                session.add(
                    Event(
                        provider="smtp",
                        dedupe_key=delivery_id,
                        type="bounce_hard",
                        raw_type=str(exc.code),
                        delivery_id=delivery_id,
                        enrollment_id=enrollment.id,
                        campaign_id=enrollment.campaign_id,
                        step_id=delivery.step_id,
                        email=enrollment.email,
                        signalled=True,  # the journey learns it from this activity's result
                        raw={"code": exc.code, "message": exc.smtp_message},
                    )
                )
            session.flush()
            guard_campaign(session, enrollment.campaign_id, self.settings.reputation_limits)
