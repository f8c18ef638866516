"""A real SMTP server (aiosmtpd) that keeps what it receives and can be told to refuse: for the
tests and for tools/ (make record-histories)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class Received:
    """One message as it came off the wire: when (time.time()), to whom, and its raw bytes."""

    at: float
    rcpt_tos: tuple[str, ...]
    content: bytes


class SmtpSink:
    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[EmailMessage] = []
        self.received: list[Received] = []
        # address -> the reply RCPT TO gets, e.g. "550 5.1.1 <x>: Recipient address rejected"
        self.rcpt_replies: dict[str, str] = {}
        # address -> seconds the end of DATA waits for its reply (the message already kept)
        self.data_delays: dict[str, float] = {}
        self._lock = threading.Lock()
        self._controller = Controller(self, hostname="127.0.0.1", port=port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self,
        _server: SMTP,
        _session: Session,
        envelope: Envelope,
        address: str,
        _options: list[str],
    ) -> str:
        reply = self.rcpt_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, _server: SMTP, _session: Session, envelope: Envelope
    ) -> str:
        at = time.time()
        raw = envelope.content if isinstance(envelope.content, bytes) else b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        with self._lock:
            self.messages.append(message)
            self.received.append(Received(at, tuple(a.lower() for a in envelope.rcpt_tos), raw))
            self.kept(message)
        delay = max((self.data_delays.get(a.lower(), 0.0) for a in envelope.rcpt_tos), default=0)
        await asyncio.sleep(delay)
        return "250 Message accepted for delivery"

    def kept(self, message: EmailMessage) -> None:
        """Called under the lock as each message is kept: for subclasses that note more."""

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self.messages if str(m["To"]).lower() == address.lower()]

    def raw_to(self, address: str) -> list[Received]:
        """The messages for `address` as received, oldest first: assert on these bytes."""
        with self._lock:
            return [r for r in self.received if address.lower() in r.rcpt_tos]


class SlowOnceSink(SmtpSink):
    """Takes the first message, then answers the end of DATA only after `delay` seconds (after a
    client with a shorter timeout gave up): the send is `uncertain`. Later messages go normally."""

    def __init__(self, port: int, delay: float) -> None:
        super().__init__(port)
        self.delay = delay
        self.slow = 1

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if self.slow:
            self.slow -= 1
            await asyncio.sleep(self.delay)
        return reply
