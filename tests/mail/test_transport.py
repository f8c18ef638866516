"""SMTP replies are classified by whose problem they are."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest

from mail.message import Envelope
from mail.transport import (
    OutboxTransport,
    RecipientRejected,
    SenderMisconfigured,
    SmtpTransport,
    TransportError,
    _classify,
)


@pytest.mark.parametrize(
    ("code", "message", "kind"),
    [
        (550, "5.1.1 <x@y>: Recipient address rejected: User unknown", RecipientRejected),
        (550, "Mailbox unavailable", RecipientRejected),
        (553, "5.1.3 Bad recipient address syntax", RecipientRejected),
        (552, "5.2.2 Mailbox full", RecipientRejected),
        (554, "5.7.1 <x@y>: Recipient address rejected: Access denied", RecipientRejected),
        (550, "5.7.1 Relaying denied", SenderMisconfigured),
        (554, "5.7.1 Client host rejected: not permitted to relay", SenderMisconfigured),
        (530, "5.7.0 Must issue a STARTTLS command first", SenderMisconfigured),
        (535, "5.7.8 Authentication credentials invalid", SenderMisconfigured),
        (550, "5.7.0 Authentication required", SenderMisconfigured),
        (451, "4.7.1 Greylisted", TransportError),
        (421, "Service not available", TransportError),
        (452, "4.2.2 Mailbox full, try later", TransportError),
    ],
)
def test_smtp_replies_are_classified(code: int, message: str, kind: type[Exception]) -> None:
    error = _classify(code, message)
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
    message = EmailMessage()
    message["X-Drip-Delivery-Id"] = "snd_1"
    message["To"] = "a@example.com"
    message.set_content("hello")
    outbox = OutboxTransport(tmp_path / "outbox")
    envelope = Envelope("s@example.com", "a@example.com")
    await outbox.send(message, envelope)
    await outbox.send(message, envelope)
    assert [p.name for p in (tmp_path / "outbox").iterdir()] == ["snd_1.eml"]


async def test_connection_refused_is_transient() -> None:
    transport = SmtpTransport("smtp://127.0.0.1:1", timeout=2)
    message = EmailMessage()
    message.set_content("x")
    with pytest.raises(TransportError):
        await transport.send(message, Envelope("s@example.com", "a@example.com"))
