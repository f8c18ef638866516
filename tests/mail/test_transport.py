"""SMTP replies are classified by whose problem they are."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mail.message import Envelope, MessageParts
from mail.mime import WireMessage, build_wire
from mail.transport import (
    MessageRefused,
    OutboxTransport,
    RecipientRejected,
    SenderMisconfigured,
    SmtpTransport,
    TransportError,
    _classify,
)
from tests.conftest import free_port
from tools.smtp_sink import SmtpSink


@pytest.mark.parametrize(
    ("stage", "code", "message", "kind"),
    [
        ("RCPT", 550, "5.1.1 <x@y>: Recipient address rejected: User unknown", RecipientRejected),
        ("RCPT", 550, "Mailbox unavailable", RecipientRejected),
        ("RCPT", 550, "Requested action not taken", RecipientRejected),
        ("RCPT", 553, "5.1.3 Bad recipient address syntax", RecipientRejected),
        (
            "RCPT",
            550,
            "5.2.1 The email account that you tried to reach is disabled",
            RecipientRejected,
        ),
        # Full, over quota, throttled: transient, retried with backoff like a 4xx.
        ("RCPT", 552, "5.4.5 Daily user sending quota exceeded", TransportError),
        ("DATA", 550, "5.4.5 Daily sending quota exceeded", TransportError),
        ("RCPT", 550, "5.7.1 Rate limited, too many messages, try again later", TransportError),
        ("DATA", 554, "5.7.0 Throttling failure: Maximum sending rate exceeded", TransportError),
        # Refusals of the message, not of the mailbox: failed, nothing suppressed.
        ("DATA", 552, "5.3.4 Message size exceeds fixed limit", MessageRefused),
        ("DATA", 554, "5.6.0 Message content rejected", MessageRefused),
        ("DATA", 550, "5.7.1 Message rejected as spam", MessageRefused),
        ("DATA", 550, "5.1.1 User unknown", MessageRefused),  # only RCPT refuses a mailbox
        ("RCPT", 552, "5.2.2 Mailbox full", MessageRefused),
        ("RCPT", 554, "5.7.1 <x@y>: Recipient address rejected: Access denied", MessageRefused),
        ("RCPT", 550, "5.7.1 Relaying denied", SenderMisconfigured),
        ("RCPT", 554, "5.7.1 Client host rejected: not permitted to relay", SenderMisconfigured),
        ("MAIL", 530, "5.7.0 Must issue a STARTTLS command first", SenderMisconfigured),
        ("MAIL", 535, "5.7.8 Authentication credentials invalid", SenderMisconfigured),
        ("RCPT", 550, "5.7.0 Authentication required", SenderMisconfigured),
        ("RCPT", 451, "4.7.1 Greylisted", TransportError),
        ("DATA", 421, "Service not available", TransportError),
        ("RCPT", 452, "4.2.2 Mailbox full, try later", TransportError),
    ],
)
def test_smtp_replies_are_classified_by_stage_and_code(
    stage: str, code: int, message: str, kind: type[Exception]
) -> None:
    error = _classify(code, message, stage)
    assert type(error) is kind


def test_smtp_url_settings() -> None:
    plain = SmtpTransport("smtp://user%40x:p%3Ass@mail.example.com:587")
    assert (plain.hostname, plain.port, plain.username, plain.password) == (
        "mail.example.com",
        587,
        "user@x",
        "p:ss",
    )
    assert plain.start_tls is None and plain.use_tls is False  # STARTTLS when the server offers it
    assert SmtpTransport("smtp://h?starttls=required").start_tls is True
    implicit = SmtpTransport("smtps://h")
    assert (implicit.port, implicit.use_tls, implicit.start_tls) == (465, True, False)
    with pytest.raises(ValueError):
        SmtpTransport("http://h")


async def test_outbox_writes_one_file_per_delivery_idempotently(tmp_path: Path) -> None:
    message, envelope = plain("a@example.com", "snd_1")
    outbox = OutboxTransport(tmp_path / "outbox")
    await outbox.send(message, envelope)
    await outbox.send(message, envelope)
    assert [p.name for p in (tmp_path / "outbox").iterdir()] == ["snd_1.eml"]
    assert (tmp_path / "outbox" / "snd_1.eml").read_bytes() == message.data


async def test_connection_refused_is_transient() -> None:
    transport = SmtpTransport("smtp://127.0.0.1:1", timeout=2)
    with pytest.raises(TransportError):
        await transport.send(*plain("a@example.com"))


class CountingSink(SmtpSink):
    """Counts the SMTP sessions (connections) the server saw."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.sessions = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # type: ignore[no-untyped-def]  # noqa: N802
        self.sessions += 1
        session.host_name = hostname
        return responses


def plain(to: str, delivery_id: str = "snd_1") -> tuple[WireMessage, Envelope]:
    return build_wire(
        MessageParts(
            delivery_id=delivery_id,
            to=to,
            from_email="s@example.com",
            subject="hi",
            html="<p>hello</p>",
            text="hello\n",
            unsubscribe_url="https://mail.example.com/u/t",
            campaign_id=1,
            campaign_name="c",
        )
    )


@pytest.fixture
def counting_sink() -> Iterator[CountingSink]:
    sink = CountingSink(free_port())
    sink.start()
    yield sink
    sink.stop()


async def test_one_connection_carries_many_messages(counting_sink: CountingSink) -> None:
    transport = SmtpTransport(counting_sink.url, timeout=5)
    for i in range(5):
        await transport.send(*plain(f"r{i}@example.com"))
    assert len(counting_sink.messages) == 5
    assert counting_sink.sessions == 1 and transport.connections_opened == 1


async def test_a_connection_is_never_reused_after_an_error(counting_sink: CountingSink) -> None:
    counting_sink.rcpt_replies["gone@example.com"] = "550 5.1.1 User unknown"
    transport = SmtpTransport(counting_sink.url, timeout=5)
    await transport.send(*plain("a@example.com"))
    with pytest.raises(RecipientRejected):
        await transport.send(*plain("gone@example.com"))
    await transport.send(*plain("b@example.com"))
    assert transport.connections_opened == 2  # the refused one's connection was dropped
    assert [str(m["To"]) for m in counting_sink.messages] == ["a@example.com", "b@example.com"]


async def test_a_connection_the_server_dropped_is_replaced(counting_sink: CountingSink) -> None:
    transport = SmtpTransport(counting_sink.url, timeout=5)
    await transport.send(*plain("a@example.com"))
    kept = transport._idle[0].client
    await kept.quit()  # as a server that timed the idle client out would have
    await transport.send(*plain("b@example.com"))
    assert transport.connections_opened == 2
    assert len(counting_sink.messages) == 2


async def test_idle_and_used_up_connections_are_not_reused(counting_sink: CountingSink) -> None:
    transport = SmtpTransport(counting_sink.url, timeout=5, messages_per_connection=2)
    for i in range(4):
        await transport.send(*plain(f"r{i}@example.com"))
    assert transport.connections_opened == 2
    stale = SmtpTransport(counting_sink.url, timeout=5, idle_seconds=0)
    await stale.send(*plain("x@example.com"))
    await stale.send(*plain("y@example.com"))
    assert stale.connections_opened == 2
