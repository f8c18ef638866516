"""The send activity alone (temporalio's ActivityEnvironment), on a real SQLite database and a
real SMTP server (aiosmtpd) whose raw received bytes are checked: what each retry does with the
row an earlier attempt left, where the point of no return is, and what each SMTP answer does."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session as DbSession
from sqlmodel import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import activities.sending as sending
from activities.sending import SendingActivities, Status
from domain.journey import StepInput, StepOutcome
from mail.transport import SmtpTransport
from services import frequency
from settings import Settings
from storage import counters
from storage.counters import Metric
from storage.db import make_engine
from storage.migrate import upgrade
from storage.models import (
    Campaign,
    CapSlot,
    Delivery,
    Enrollment,
    StatCounter,
    Step,
    Suppression,
    Template,
    utcnow,
)
from tests.conftest import free_port

DEADLINE = 5.0
LONG_SUBJECT = (
    "Grüße aus Zürich, {{ first_name }}: ваш заказ готов — a subject long enough that any "
    "78-column policy must fold it, in three scripts"
)


@dataclass
class RawSink:
    """aiosmtpd keeping the bytes as received (`original_content`), never a parsed message."""

    port: int = field(default_factory=free_port)
    raw: list[bytes] = field(default_factory=list)
    rcpt_reply: str | None = None
    data_reply: str | None = None
    data_delay: float = 0.0

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self.data_reply:
            return self.data_reply
        assert isinstance(envelope.original_content, bytes)
        self.raw.append(envelope.original_content)  # accepted: the server has it from now on
        await asyncio.sleep(self.data_delay)
        return "250 Message accepted"


@pytest.fixture
def sink() -> Iterator[RawSink]:
    server = RawSink()
    controller = Controller(server, hostname="127.0.0.1", port=server.port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'drip.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@dataclass
class World:
    engine: Engine
    sink: RawSink
    step: StepInput
    campaign_id: int
    email: str

    def activities(self, **settings: Any) -> SendingActivities:
        config = Settings(
            database_url=str(self.engine.url),
            smtp_url=f"smtp://127.0.0.1:{self.sink.port}",
            smtp_timeout_seconds=2,
            send_deadline_seconds=DEADLINE,
            public_url="https://drip.example.com",
            secret_key="a-test-secret-that-is-long-enough-0123456789",
            **settings,
        )
        transport = SmtpTransport(config.smtp_url or "", timeout=config.smtp_timeout_seconds)
        return SendingActivities(config, self.engine, transport)

    def delivery(self) -> Delivery | None:
        with DbSession(self.engine) as session:
            return session.exec(select(Delivery)).first()

    def set_delivery(self, status: str, started_seconds_ago: float) -> None:
        with DbSession(self.engine) as session:
            row = Delivery(
                id="snd_earlier",
                enrollment_id=self.step.enrollment_id,
                campaign_id=self.campaign_id,
                step_id=self.step.step_id,
                step_order=1,
                decision="sent",
                status=status,
                send_started_at=utcnow() - timedelta(seconds=started_seconds_ago),
            )
            reached = StatCounter(campaign_id=self.campaign_id, step_id=self.step.step_id,
                                  metric=Metric.REACHED, value=1)  # fmt: skip
            session.add_all([row, reached])
            session.commit()

    def counts(self) -> dict[tuple[int, str], int]:
        with DbSession(self.engine) as session:
            running = counters.read(session, self.campaign_id)
            truth = counters.from_rows(session, self.campaign_id)
            steps = {k: v for k, v in truth.items() if k[0] != counters.CAMPAIGN}
            assert running == steps  # enrolled by hand here: no campaign-wide counts
            return running


@pytest.fixture
def world(engine: Engine, sink: RawSink) -> World:
    with DbSession(engine) as session:
        template = Template(name="t", html="<p>Hi {{ first_name }}</p>", text="Hi {{ first_name }}")
        campaign = Campaign(name="Onboarding", status="active", from_email="hello@drip.example.com",
                            from_name="Zoë Ångström")  # fmt: skip
        session.add_all([template, campaign])
        session.flush()
        step = Step(campaign_id=campaign.id or 0, step_order=1, subject=LONG_SUBJECT,
                    template_id=template.id or 0)  # fmt: skip
        address = "ana@example.org"
        enrollment = Enrollment(campaign_id=campaign.id or 0, email=address,
                                fields={"first_name": "Ana"}, workflow_id="w")  # fmt: skip
        session.add_all([step, enrollment])
        session.commit()
        step_input = StepInput(enrollment.id or 0, step.id or 0, 1, "sent")
        return World(engine, sink, step_input, campaign.id or 0, address)


async def send(acts: SendingActivities, step: StepInput, env: ActivityEnvironment | None = None):  # type: ignore[no-untyped-def]
    return await (env or ActivityEnvironment()).run(acts.send_step, step)


async def test_sent_once_and_a_retry_after_sent_sends_nothing(world: World) -> None:
    acts = world.activities()
    first = await send(acts, world.step)
    again = await send(acts, world.step)
    assert first.outcome == again.outcome == StepOutcome.DONE
    assert first.delivery_id == again.delivery_id
    assert len(world.sink.raw) == 1
    row = world.delivery()
    assert row is not None and row.status == Status.SENT
    assert world.counts()[(world.step.step_id, Metric.SENT)] == 1


async def test_the_wire_carries_our_headers_unencoded(world: World) -> None:
    """Issue 11 point 18: aiosmtplib re-flattened the message at 78 columns, RFC 2047-encoding
    List-Unsubscribe. The bytes the server received must carry it as one plain line."""
    await send(world.activities(), world.step)
    [raw] = world.sink.raw
    head = raw.split(b"\r\n\r\n", 1)[0]
    unfolded = head.replace(b"\r\n ", b" ").replace(b"\r\n\t", b"\t")
    lines = {line.split(b":", 1)[0].lower(): line for line in unfolded.split(b"\r\n")}
    unsubscribe = lines[b"list-unsubscribe"]
    assert unsubscribe.startswith(b"List-Unsubscribe: <https://drip.example.com/u/"), unsubscribe
    assert b"=?" not in unsubscribe
    assert b"List-Unsubscribe: <https" in head, "List-Unsubscribe must not be folded"
    assert lines[b"list-unsubscribe-post"] == b"List-Unsubscribe-Post: List-Unsubscribe=One-Click"
    delivery = world.delivery()
    assert delivery is not None
    assert lines[b"message-id"] == f"Message-ID: <{delivery.id}@drip.example.com>".encode()
    assert raw.isascii() or b"8bit" in raw.lower()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(parsed["From"]) == "Zoë Ångström <hello@drip.example.com>"
    assert lines[b"from"].startswith(b"From: =?utf-8?")  # the name encoded, the address plain
    assert lines[b"from"].endswith(b" <hello@drip.example.com>")
    assert str(parsed["Subject"]) == LONG_SUBJECT.replace("{{ first_name }}", "Ana")
    assert lines[b"subject"].startswith(b"Subject: =?utf-8?")
    assert parsed["List-Unsubscribe"] == unsubscribe.split(b": ", 1)[1].decode()


async def test_a_fresh_lease_of_another_attempt_is_waited_out(world: World) -> None:
    world.set_delivery(Status.SENDING, started_seconds_ago=1)
    with pytest.raises(ApplicationError) as raised:
        await send(world.activities(), world.step)
    assert raised.value.type == "SendLeaseHeld"
    assert raised.value.next_retry_delay is not None
    assert raised.value.next_retry_delay > timedelta(seconds=DEADLINE)  # beyond the deadline
    assert world.sink.raw == []


async def test_an_expired_lease_before_the_point_of_no_return_is_simply_resent(
    world: World,
) -> None:
    world.set_delivery(Status.SENDING, started_seconds_ago=DEADLINE + 60)
    result = await send(world.activities(), world.step)
    assert result.outcome == StepOutcome.DONE and result.delivery_id == "snd_earlier"
    assert len(world.sink.raw) == 1
    row = world.delivery()
    assert row is not None and row.status == Status.SENT


async def test_hold_records_a_dead_attempt_past_the_point_of_no_return_uncertain(
    world: World,
) -> None:
    world.set_delivery(Status.HANDING_OVER, started_seconds_ago=DEADLINE + 60)
    result = await send(world.activities(), world.step)  # hold is the default
    assert result.outcome == StepOutcome.DONE  # the journey moves on
    assert world.sink.raw == []  # and nothing is sent again
    row = world.delivery()
    assert row is not None and row.status == Status.UNCERTAIN
    assert world.counts()[(world.step.step_id, Metric.UNCERTAIN)] == 1
    assert (await send(world.activities(), world.step)).outcome == StepOutcome.DONE
    assert world.sink.raw == []


async def test_resend_sends_a_dead_attempt_past_the_point_of_no_return_again(
    world: World,
) -> None:
    world.set_delivery(Status.HANDING_OVER, started_seconds_ago=DEADLINE + 60)
    result = await send(world.activities(uncertain_sends="resend"), world.step)
    assert result.outcome == StepOutcome.DONE
    assert len(world.sink.raw) == 1
    row = world.delivery()
    assert row is not None and row.status == Status.SENT


async def test_the_point_of_no_return_is_recorded_before_the_terminator(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt that cannot record the point of no return never writes the end of DATA:
    the server drops the unterminated message, and the retry sends it, once."""
    acts = world.activities()
    seen: list[str] = []
    original = SendingActivities._mark_handing_over

    def fail_once(self: SendingActivities, delivery_id: str, lease: Any) -> None:
        seen.append(delivery_id)
        if len(seen) == 1:
            raise OperationalError("UPDATE delivery", {}, Exception("database is locked"))
        original(self, delivery_id, lease)

    monkeypatch.setattr(SendingActivities, "_mark_handing_over", fail_once)
    with pytest.raises(OperationalError):
        await send(acts, world.step)
    await asyncio.sleep(0.3)  # the server has seen the connection close mid-DATA
    assert world.sink.raw == []
    row = world.delivery()
    assert row is not None and row.status == Status.PENDING  # the lease was given back
    result = await send(acts, world.step)
    assert result.outcome == StepOutcome.DONE and len(world.sink.raw) == 1


async def test_no_answer_after_the_terminator_is_uncertain_under_hold(world: World) -> None:
    world.sink.data_delay = 4  # accepted, but the 250 comes after our 2 s SMTP timeout
    result = await send(world.activities(), world.step)
    assert result.outcome == StepOutcome.DONE
    row = world.delivery()
    assert row is not None and row.status == Status.UNCERTAIN
    assert len(world.sink.raw) == 1


async def test_a_failed_sent_write_is_retried_until_it_commits(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11 point 2: the server accepted, recording `sent` fails twice: the activity must
    not fail (its retry would send again), it retries the write."""
    monkeypatch.setattr(sending, "RECORD_RETRY_SECONDS", (0.05,))
    tries: list[int] = []
    original = SendingActivities._mark_sent

    def flaky(self: SendingActivities, delivery_id: str) -> None:
        tries.append(1)
        if len(tries) <= 2:
            raise OperationalError("UPDATE delivery", {}, Exception("database is locked"))
        original(self, delivery_id)

    monkeypatch.setattr(SendingActivities, "_mark_sent", flaky)
    result = await send(world.activities(), world.step)
    assert result.outcome == StepOutcome.DONE and len(tries) == 3
    row = world.delivery()
    assert row is not None and row.status == Status.SENT
    assert len(world.sink.raw) == 1


async def test_preparation_is_heartbeated(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11 point 1: a slow preparation (a database lock, a slow render) heartbeats, so
    Temporal does not start a second attempt beside it."""
    monkeypatch.setattr(sending, "HEARTBEAT_EVERY_SECONDS", 0.1)
    original = SendingActivities._load
    beats_at_send: list[int] = []
    beats: list[Any] = []

    def slow_load(self: SendingActivities, step: StepInput) -> Any:
        import time

        time.sleep(0.6)  # waiting on the write lock, say
        loaded = original(self, step)
        beats_at_send.append(len(beats))
        return loaded

    monkeypatch.setattr(SendingActivities, "_load", slow_load)
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    await send(world.activities(), world.step, env)
    assert beats_at_send and beats_at_send[0] >= 3


async def test_a_mailbox_refused_at_rcpt_bounces_and_suppresses(world: World) -> None:
    world.sink.rcpt_reply = "550 5.1.1 <ana@example.org>: Recipient address rejected: User unknown"
    result = await send(world.activities(), world.step)
    assert (result.outcome, result.exit_status) == (StepOutcome.ENDED, "bounced")
    row = world.delivery()
    assert row is not None and row.status == Status.BOUNCED
    with DbSession(world.engine) as session:
        assert session.get(Suppression, world.email) is not None


async def test_a_refused_message_is_failed_and_the_journey_goes_on(world: World) -> None:
    """Issue 11 point 12: size and content refusals are not bounces: nothing is suppressed."""
    world.sink.data_reply = "554 5.6.0 Message content rejected"
    result = await send(world.activities(), world.step)
    assert result.outcome == StepOutcome.DONE
    row = world.delivery()
    assert row is not None and row.status == Status.FAILED
    assert row.error == "554 5.6.0 Message content rejected"
    assert world.counts()[(world.step.step_id, Metric.FAILED)] == 1
    with DbSession(world.engine) as session:
        assert session.get(Suppression, world.email) is None


async def test_quota_is_transient(world: World) -> None:
    world.sink.rcpt_reply = "552 5.4.5 Daily user sending quota exceeded"
    with pytest.raises(Exception, match="5.4.5"):
        await send(world.activities(), world.step)
    row = world.delivery()
    assert row is not None and row.status == Status.PENDING  # retried, lease given back


async def test_a_suppressed_address_is_not_sent(world: World) -> None:
    with DbSession(world.engine) as session:
        session.add(Suppression(email=world.email, reason="unsubscribe", source="test"))
        session.commit()
    result = await send(world.activities(), world.step)
    assert (result.outcome, result.exit_status) == (StepOutcome.ENDED, "unsubscribed")
    assert world.sink.raw == [] and world.delivery() is None


async def test_a_paused_campaign_holds_the_step(world: World) -> None:
    with DbSession(world.engine) as session:
        campaign = session.get(Campaign, world.campaign_id)
        assert campaign is not None
        campaign.status = "paused"
        session.add(campaign)
        session.commit()
    result = await send(world.activities(), world.step)
    assert result.outcome == StepOutcome.HELD
    assert world.sink.raw == [] and world.delivery() is None


async def test_the_message_is_composed_outside_any_write_transaction(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11 point 6: a slow render must not hold SQLite's write lock (the old code
    rendered inside the transaction that had just inserted the delivery row)."""
    import sqlite3

    database = str(world.engine.url.database)
    original = SendingActivities._compose
    wrote: list[bool] = []

    def compose_while_another_writes(self: SendingActivities, *args: Any) -> Any:
        other = sqlite3.connect(database, timeout=0.5, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # fails with "database is locked" under a writer
            other.execute("ROLLBACK")
            wrote.append(True)
        finally:
            other.close()
        return original(self, *args)

    monkeypatch.setattr(SendingActivities, "_compose", compose_while_another_writes)
    result = await send(world.activities(), world.step)
    assert result.outcome == StepOutcome.DONE and wrote == [True]


async def test_a_journey_migrated_before_its_signal_is_told_to_switch_not_sent(
    world: World,
) -> None:
    """A `migrate` publish set the enrollment to the live version (2) while the journey, not yet
    signalled, still runs version 1: its send answers SWITCH, sends nothing, writes no delivery
    and frees the step's cap slot; on the version it is on, the step is sent."""
    with DbSession(world.engine) as session:
        campaign = session.get(Campaign, world.campaign_id)
        assert campaign is not None
        campaign.live_version = 2  # the enrollment's 0: "the live one"
        session.add(campaign)
        session.add(CapSlot(email=world.email, enrollment_id=world.step.enrollment_id,
                            step_id=world.step.step_id, campaign_id=world.campaign_id,
                            reserved_at=utcnow()))  # fmt: skip
        session.commit()
    acts = world.activities()
    on_one = replace(world.step, campaign_version=1, switchable=True)
    result = await send(acts, on_one)
    assert (result.outcome, result.campaign_version) == (StepOutcome.SWITCH, 2)
    assert world.sink.raw == [] and world.delivery() is None
    with DbSession(world.engine) as session:
        assert session.exec(select(CapSlot)).all() == []
    result = await send(acts, replace(on_one, campaign_version=2))
    assert result.outcome == StepOutcome.DONE and len(world.sink.raw) == 1


async def test_the_send_takes_the_steps_cap_slot_and_answers_capped_when_it_is_full(
    world: World,
) -> None:
    """From CAP_IN_SEND on (on_cap set), the attempt that sends takes the frequency-cap slot:
    under a cap of one a day, the first message is sent and counted once (a retry is granted
    its own slot again); a second campaign's step to the same address answers CAPPED with
    when the slot frees, sends nothing, writes no delivery, and is counted deferred once."""
    with DbSession(world.engine) as session:
        frequency.set_cap(session, 1, 24)
    acts = world.activities()
    capped = replace(world.step, on_cap="defer")
    first = await send(acts, capped)
    assert first.outcome == StepOutcome.DONE and len(world.sink.raw) == 1
    assert (await send(acts, capped)).outcome == StepOutcome.DONE, "a retry: its slot is its own"
    with DbSession(world.engine) as session:
        [slot] = session.exec(select(CapSlot)).all()
        assert (slot.enrollment_id, slot.step_id) == (world.step.enrollment_id, world.step.step_id)
        other = Campaign(name="Second", status="active", from_email="hello@drip.example.com")
        session.add(other)
        session.flush()
        step = Step(campaign_id=other.id or 0, step_order=1, subject="again",
                    template_id=session.exec(select(Template)).one().id or 0)  # fmt: skip
        enrollment = Enrollment(campaign_id=other.id or 0, email=world.email, workflow_id="w2")
        session.add_all([step, enrollment])
        session.commit()
        second = StepInput(enrollment.id or 0, step.id or 0, 1, "sent", on_cap="defer")
        second_campaign = other.id
    for _ in range(2):
        result = await send(acts, second)
        assert result.outcome == StepOutcome.CAPPED, result
        assert result.reason == "1 of 1 messages in 24 h already sent to this address"
        assert result.next_free_at is not None
        assert datetime.fromisoformat(result.next_free_at) > utcnow() + timedelta(hours=23)
    assert len(world.sink.raw) == 1
    with DbSession(world.engine) as session:
        assert (
            session.exec(select(Delivery).where(Delivery.campaign_id == second_campaign)).all()
            == []
        )
        assert (
            counters.read(session, second_campaign or 0)[(step.id or 0, Metric.DEFERRED_BY_CAP)]
            == 1
        )


async def test_without_on_cap_the_send_leaves_the_cap_to_the_journey(world: World) -> None:
    """Older journeys (before CAP_IN_SEND) and exempt campaigns send no on_cap: the send takes
    no slot, even under a full cap (the journey took it, or the campaign is exempt)."""
    with DbSession(world.engine) as session:
        frequency.set_cap(session, 1, 24)
        session.add(CapSlot(email=world.email, enrollment_id=0, step_id=0,
                            campaign_id=world.campaign_id, reserved_at=utcnow()))  # fmt: skip
        session.commit()
    result = await send(world.activities(), world.step)
    assert result.outcome == StepOutcome.DONE and len(world.sink.raw) == 1
    with DbSession(world.engine) as session:
        assert len(session.exec(select(CapSlot)).all()) == 1
