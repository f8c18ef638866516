"""Journey events out: tell webhook subscribers what happened, durably.

1. `emit` writes one delivery row per subscription that wants the event, in the caller's
   transaction: the fact and its notification commit together, or neither does. The event id
   is derived from the fact (`key`), so a retried activity that records the fact again adds
   nothing (the row is unique per subscription and event id).
2. After that commit, the rows are handed to Temporal (one `WebhookDeliveryWorkflow` each) by
   the process that committed them, if it installed a `HandOver` (the API and the worker do);
   the outbox (services/outbox.py) re-drives rows not handed over (a crash in between).
3. The workflow's activity `attempt`s the POST, signed, recording each attempt on the row, and
   Temporal retries with exponential backoff for days (domain/webhooks_out.py).

The helpers below (`journeys_started`, `step_decided`, ...) are the facts, called where each is
recorded; when nobody subscribes they cost no query, but for one every few seconds
(services/webhook_subscriptions.py `wanting`)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import delete, event, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError
from ulid import ULID

from domain.journey import Decision, EventType, JourneyStatus
from domain.webhooks_out import (
    POST_TIMEOUT_SECONDS,
    SIGNATURE_HEADER,
    JourneyEventType,
    WebhookDeliveryInput,
    webhook_workflow_id,
)
from services.journeys import START_CONCURRENCY
from services.webhook_subscriptions import SecretBox, refused_address, wanting
from storage.db import session_scope
from storage.inserts import insert_ignoring_conflicts
from storage.models import (
    Delivery,
    Enrollment,
    WebhookDelivery,
    WebhookSubscription,
    utcnow,
)
from workflows.webhook_delivery import WebhookDeliveryWorkflow

log = logging.getLogger(__name__)

Data = dict[str, Any]
HANDOVER_CHUNK = 500  # rows per outbox round and per UPDATE ... IN (...)
PENDING = "drip.webhooks_out.pending"  # session.info: delivery ids to hand over after commit


# --- signing -------------------------------------------------------------------------------


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`Drip-Signature` header value: t={unix seconds},v1={hex HMAC-SHA256 over "{t}." + body},
    keyed with the secret string's UTF-8 bytes."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def event_id(type: str, key: str) -> str:
    """The body's `id`: the same for one fact however often it is recorded."""
    return "evt_" + hashlib.sha256(f"{type}:{key}".encode()).hexdigest()[:32]


# --- emitting ------------------------------------------------------------------------------


def emit(session: Session, type: JourneyEventType, data: Data, key: str) -> None:
    emit_many(session, type, [(key, data)])


def emit_many(session: Session, type: JourneyEventType, facts: Sequence[tuple[str, Data]]) -> None:
    """One delivery row per (fact, subscription wanting `type`), in the caller's transaction."""
    if not facts:
        return
    wanting = _subscribers(session, type)
    if not wanting:
        return
    now = utcnow()
    rows = []
    for key, data in facts:
        eid = event_id(type, key)
        body = json.dumps(
            {"id": eid, "type": str(type), "occurred_at": _iso(now), "data": data},
            separators=(",", ":"),
            default=str,
        )
        rows += [
            dict(id=f"whd_{ULID()}", subscription_id=s, event_id=eid, type=str(type),
                 email=data.get("email"), body=body, status="pending", attempts=0,
                 created_at=now, handed_over=False)
            for s in wanting
        ]  # fmt: skip
    _after_commit(session, insert_ignoring_conflicts(session, WebhookDelivery, rows))


def _subscribers(session: Session, type: str) -> list[int]:
    return [s.id or 0 for s in wanting(session, type)]


def _wanted(session: Session, *types: str) -> bool:
    return bool(wanting(session, *types))


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _journey(enrollment: Enrollment) -> Data:
    return {
        "campaign_id": enrollment.campaign_id,
        "enrollment_id": enrollment.id,
        "entry": enrollment.entry,
        "email": enrollment.email,
    }


# --- the facts -----------------------------------------------------------------------------


def journeys_started(session: Session, enrollment_ids: Sequence[int]) -> None:
    """Their journeys are in Temporal now (services/enrollment.py mark_started)."""
    if not enrollment_ids or not _wanted(session, JourneyEventType.JOURNEY_STARTED):
        return
    rows = session.exec(select(Enrollment).where(col(Enrollment.id).in_(enrollment_ids)))
    emit_many(
        session,
        JourneyEventType.JOURNEY_STARTED,
        [(f"enrollment:{e.id}", _journey(e)) for e in rows],
    )


def step_decided(session: Session, delivery_id: str, decision: str) -> None:
    """A step's message was recorded sent (its alternative, or the step itself), or the step
    was recorded skipped. The rows are read only when someone subscribes."""
    if decision == Decision.SKIPPED:
        type = JourneyEventType.STEP_SKIPPED
    elif decision == Decision.ALTERNATIVE:
        type = JourneyEventType.STEP_ALTERNATIVE_SENT
    else:
        type = JourneyEventType.STEP_SENT
    if not _wanted(session, type):
        return
    delivery = session.get(Delivery, delivery_id)
    enrollment = session.get(Enrollment, delivery.enrollment_id) if delivery else None
    if delivery is None or enrollment is None:  # erased meanwhile: nobody to tell about
        return
    data = _journey(enrollment) | {
        "step_id": delivery.step_id,
        "step_order": delivery.step_order,
        "delivery_id": delivery.id,
        "condition_met": delivery.condition_met,
    }
    if type != JourneyEventType.STEP_SKIPPED:
        data |= {"subject": delivery.subject, "message_id": delivery.message_id}
    emit(session, type, data, key=delivery.id)


def journey_finished(session: Session, enrollment: Enrollment) -> None:
    """The journey's end was recorded: completed, converted, or exited with its status."""
    status = enrollment.status
    if status == JourneyStatus.COMPLETED:
        type = JourneyEventType.JOURNEY_COMPLETED
    elif status == JourneyStatus.CONVERTED:
        type = JourneyEventType.JOURNEY_CONVERTED
    else:
        type = JourneyEventType.JOURNEY_EXITED
    data = _journey(enrollment) | {"status": status, "reason": enrollment.status_reason}
    emit(session, type, data, key=f"enrollment:{enrollment.id}")


def engagement_recorded(session: Session, rows: Sequence[Data]) -> None:
    """Bounces and unsubscribes among events stored for the first time (services/events.py),
    each row as inserted there (type, provider, dedupe_key, delivery_id, ...)."""
    bounces = [r for r in rows if r["type"] in (EventType.BOUNCE_HARD, EventType.BOUNCE_SOFT)]
    unsubscribes = [r for r in rows if r["type"] == EventType.UNSUBSCRIBE]
    for type, chosen in (
        (JourneyEventType.DELIVERY_BOUNCED, bounces),
        (JourneyEventType.RECIPIENT_UNSUBSCRIBED, unsubscribes),
    ):
        if not chosen or not _wanted(session, type):
            continue
        facts = []
        for row in chosen:
            data: Data = {
                "campaign_id": row["campaign_id"],
                "enrollment_id": row["enrollment_id"],
                "email": row["email"],
                "step_id": row["step_id"],
                "delivery_id": row["delivery_id"],
                "provider": row["provider"],
            }
            if type == JourneyEventType.DELIVERY_BOUNCED:
                data["bounce"] = "hard" if row["type"] == EventType.BOUNCE_HARD else "soft"
            facts.append((f"{row['provider']}:{row['dedupe_key']}", data))
        emit_many(session, type, facts)


def forget(session: Session, address: str) -> None:
    """An erasure: the deliveries that name the address go (one still retrying stops)."""
    session.execute(delete(WebhookDelivery).where(col(WebhookDelivery.email) == address))


# --- handing over to Temporal --------------------------------------------------------------


def _after_commit(session: Session, delivery_ids: list[str]) -> None:
    if not delivery_ids:
        return
    if PENDING not in session.info:  # listen once per session; a session lives shortly
        event.listen(session, "after_commit", _committed)
        event.listen(session, "after_rollback", _rolled_back)
    session.info.setdefault(PENDING, []).extend(delivery_ids)


def _committed(session: OrmSession) -> None:
    ids = session.info.get(PENDING, [])
    session.info[PENDING] = []
    if ids and _handover is not None:
        try:
            _handover.notify(ids)
        except Exception:  # e.g. the loop closed at shutdown: never fail a commit that happened
            log.warning("%d webhook deliveries left to the outbox", len(ids), exc_info=True)


def _rolled_back(session: OrmSession) -> None:
    session.info[PENDING] = []  # never written: nothing to hand over


class HandOver:
    """Starts the delivery workflows of committed rows, from this process's event loop (commits
    happen on worker threads), and marks them handed over."""

    def __init__(self, client: Client, engine: Engine, task_queue: str) -> None:
        self.client = client
        self.engine = engine
        self.task_queue = task_queue
        self.loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[int]] = set()

    def notify(self, delivery_ids: list[str]) -> None:
        self.loop.call_soon_threadsafe(self._spawn, self.start(delivery_ids))

    def _spawn(self, work: Coroutine[Any, Any, int]) -> None:
        task = self.loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self, delivery_ids: Sequence[str]) -> int:
        """Start one workflow per delivery; mark those Temporal has. How many."""
        gate = asyncio.Semaphore(START_CONCURRENCY)  # a batch's 10,000 starts: not all at once

        async def one(delivery_id: str) -> str | None:
            async with gate:
                return await start_one(delivery_id)

        async def start_one(delivery_id: str) -> str | None:
            try:
                await self.client.start_workflow(
                    WebhookDeliveryWorkflow.run,
                    WebhookDeliveryInput(delivery_id),
                    id=webhook_workflow_id(delivery_id),
                    task_queue=self.task_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                )
            except WorkflowAlreadyStartedError:
                pass
            except (RPCError, RuntimeError) as exc:  # unreachable: the outbox retries
                log.warning("webhook delivery %s not started yet (%s)", delivery_id, exc)
                return None
            return delivery_id

        started = [d for d in await asyncio.gather(*map(one, delivery_ids)) if d is not None]
        for at in range(0, len(started), HANDOVER_CHUNK):
            await asyncio.to_thread(
                _mark_handed_over, self.engine, started[at : at + HANDOVER_CHUNK]
            )
        return len(started)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)


_handover: HandOver | None = None


def install(handover: HandOver | None) -> HandOver | None:
    """Make this process hand its committed rows over (None: leave them to the outbox).
    Returns the one installed before."""
    global _handover
    previous, _handover = _handover, handover
    return previous


def _mark_handed_over(engine: Engine, delivery_ids: list[str]) -> None:
    if not delivery_ids:
        return
    with session_scope(engine) as session:
        session.execute(
            update(WebhookDelivery)
            .where(col(WebhookDelivery.id).in_(delivery_ids))
            .values(handed_over=True)
        )


def not_handed_over(engine: Engine, created_before: datetime) -> list[str]:
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(WebhookDelivery.id)
                .where(
                    col(WebhookDelivery.handed_over).is_(False),
                    col(WebhookDelivery.created_at) < created_before,
                )
                .order_by(col(WebhookDelivery.id))
                .limit(HANDOVER_CHUNK)
            )
        )


async def redrive(engine: Engine, client: Client, task_queue: str, created_before: datetime) -> int:
    """The outbox's part: start the workflows of rows committed but not handed over."""
    ids = await asyncio.to_thread(not_handed_over, engine, created_before)
    return await HandOver(client, engine, task_queue).start(ids) if ids else 0


# --- one attempt ---------------------------------------------------------------------------


@dataclass
class Attempt:
    """What became of one POST: done (delivered, or nothing left to deliver) or to retry."""

    done: bool
    detail: str


@dataclass
class _Target:
    url: str
    body: bytes
    secret: str


class Deliverer:
    """POSTs delivery rows to their subscriptions (the worker's activity stands on it)."""

    def __init__(self, engine: Engine, box: SecretBox, allow_private: bool) -> None:
        self.engine = engine
        self.box = box
        self.allow_private = allow_private

    async def attempt(self, delivery_id: str) -> Attempt:
        target = await asyncio.to_thread(self._load, delivery_id)
        if isinstance(target, Attempt):
            return target
        code: int | None = None
        error: str | None = None
        host = httpx.URL(target.url).host
        why = None if self.allow_private else await asyncio.to_thread(refused_address, host, None)
        if why is not None:
            error = f"refused: {why}"
        else:
            stamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "drip-webhooks/1",
                SIGNATURE_HEADER: signature(target.secret, stamp, target.body),
            }
            try:
                async with httpx.AsyncClient(
                    timeout=POST_TIMEOUT_SECONDS, follow_redirects=False
                ) as http:
                    answer = await http.post(target.url, content=target.body, headers=headers)
                code = answer.status_code
                if not 200 <= code < 300:
                    error = f"answered {code}: {answer.text[:200]}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
        await asyncio.to_thread(self._record, delivery_id, code, error)
        return Attempt(error is None, error or f"delivered ({code})")

    def _load(self, delivery_id: str) -> _Target | Attempt:
        with session_scope(self.engine) as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            if delivery is None:
                return Attempt(True, "gone: its subscription was deleted")
            if delivery.status == "delivered":
                return Attempt(True, "delivered already")
            subscription = session.get(WebhookSubscription, delivery.subscription_id)
            if subscription is None:
                return Attempt(True, "gone: its subscription was deleted")
            secret = self.box.open(subscription.secret_encrypted)
            return _Target(subscription.url, delivery.body.encode(), secret)

    def _record(self, delivery_id: str, code: int | None, error: str | None) -> None:
        now = utcnow()
        values: Data = dict(
            attempts=WebhookDelivery.attempts + 1,
            last_attempt_at=now,
            last_status_code=code,
            last_error=error,
        )
        if error is None:
            values |= dict(status="delivered", delivered_at=now)
        with session_scope(self.engine) as session:
            session.execute(
                update(WebhookDelivery)
                .where(col(WebhookDelivery.id) == delivery_id)
                .values(**values)
            )

    def give_up(self, delivery_id: str) -> None:
        """The retries ran out: failed, for good."""
        with session_scope(self.engine) as session:
            session.execute(
                update(WebhookDelivery)
                .where(
                    col(WebhookDelivery.id) == delivery_id, col(WebhookDelivery.status) == "pending"
                )
                .values(status="failed")
            )
