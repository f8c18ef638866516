"""Where sent mail goes: an outbox folder of .eml files by default, or SMTP (aiosmtplib).

SMTP failures are classified, because each class is handled differently by the send activity:
the recipient's mailbox refused for good (the journey ends as bounced), the sender's own setup is
wrong (nobody is blamed: retried and reported loudly), or anything else (retried with backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib

from mail.message import DELIVERY_HEADER, Envelope


class TransportError(Exception):
    """A failed send that may succeed later: retried with backoff."""


class RecipientRejected(Exception):
    """The receiving server refused this recipient for good (e.g. 550 5.1.1)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.smtp_message = message


class SenderMisconfigured(TransportError):
    """Authentication, TLS or relaying refused: our setup, never the recipient's fault."""


class Transport(Protocol):
    async def send(self, message: EmailMessage, envelope: Envelope) -> None: ...


class OutboxTransport:
    """Writes each message to `<dir>/<delivery id>.eml`; rewriting the same file is idempotent."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: EmailMessage, envelope: Envelope) -> None:
        await asyncio.to_thread(self._write, message)

    def _write(self, message: EmailMessage) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = str(message[DELIVERY_HEADER])
        target = self.directory / f"{name}.eml"
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(message.as_bytes())
        os.replace(tmp, target)


class SmtpTransport:
    """`smtp://user:pass@host:587` (STARTTLS when offered), `smtps://...:465` (implicit TLS),
    `?starttls=required` to refuse plain text.

    Connections are kept and reused, as mail senders do: a connection costs a TCP (and TLS)
    handshake, EHLO and AUTH, several times the cost of the message on it. A kept connection is
    checked with NOOP before use and never reused after any error, so no message ever goes out
    on a connection in an unknown state."""

    def __init__(
        self,
        url: str,
        timeout: float = 30.0,
        *,
        keep: int = 16,
        idle_seconds: float = 30.0,
        messages_per_connection: int = 100,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError("DRIP_SMTP_URL must start with smtp:// or smtps://")
        self.hostname = parts.hostname or "localhost"
        self.use_tls = parts.scheme == "smtps"
        self.port = parts.port or (465 if self.use_tls else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.start_tls: bool | None = True if "starttls=required" in parts.query else None
        if self.use_tls:
            self.start_tls = False
        self.timeout = timeout
        # Our EHLO name, looked up once: left unset, aiosmtplib resolves it on every connection
        # (a DNS round trip per message).
        self.local_hostname = socket.getfqdn()
        self.keep = keep  # idle connections kept at most
        self.idle_seconds = idle_seconds  # servers drop idle clients (often after 60 s or so)
        self.messages_per_connection = messages_per_connection  # providers cap it (SES: 50+)
        self._idle: list[_Kept] = []
        self.connections_opened = 0

    async def send(self, message: EmailMessage, envelope: Envelope) -> None:
        kept = None
        try:
            kept = await self._checkout()
            await kept.client.send_message(
                message, sender=envelope.sender, recipients=[envelope.recipient]
            )
        except BaseException as exc:
            if kept is not None:
                _close(kept.client)
            translated = _translate(exc)
            if translated is exc:
                raise
            raise translated from exc
        kept.sent += 1
        self._checkin(kept)

    async def _checkout(self) -> _Kept:
        while self._idle:
            kept = self._idle.pop()
            if time.monotonic() - kept.idle_since < self.idle_seconds:
                try:
                    await kept.client.noop()
                    return kept
                except Exception:  # dropped by the server, or made on a loop now closed
                    pass
            _close(kept.client)
        client = aiosmtplib.SMTP(
            hostname=self.hostname,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            start_tls=self.start_tls,
            timeout=self.timeout,
            local_hostname=self.local_hostname,
        )
        await client.connect()
        self.connections_opened += 1
        return _Kept(client)

    def _checkin(self, kept: _Kept) -> None:
        if kept.sent >= self.messages_per_connection or len(self._idle) >= self.keep:
            _close(kept.client)
            return
        kept.idle_since = time.monotonic()
        self._idle.append(kept)


@dataclass
class _Kept:
    client: aiosmtplib.SMTP
    sent: int = 0
    idle_since: float = 0.0


def _close(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(Exception):  # closing is best effort: the socket may be gone
        client.close()


def _translate(exc: BaseException) -> BaseException:
    """An aiosmtplib failure as the send activity handles it; anything else unchanged."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = exc.recipients[0]
        return _classify(refused.code, refused.message)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return SenderMisconfigured(f"authentication failed: {exc.code} {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return SenderMisconfigured(f"sender refused: {exc.code} {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):  # e.g. DATA refused
        return _classify(exc.code, exc.message)
    if isinstance(exc, (aiosmtplib.SMTPException, OSError)):
        return TransportError(f"{type(exc).__name__}: {exc}")
    return exc


_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SENDER_WORDS = re.compile(
    r"relay|authenticat|auth required|starttls|tls required|must issue", re.I
)


def _classify(code: int, message: str) -> Exception:
    """5xx naming the mailbox → RecipientRejected; 530/535 or 5.7.x auth/TLS/relay →
    SenderMisconfigured; anything else (4xx) → TransportError."""
    if code in (530, 535, 538) or _SENDER_WORDS.search(message):
        return SenderMisconfigured(f"{code} {message}")
    if 500 <= code < 600:
        enhanced = _ENHANCED.search(message)
        if enhanced and enhanced.group(2) == "7" and not _mailbox_policy(message):
            return SenderMisconfigured(f"{code} {message}")
        return RecipientRejected(code, message)
    return TransportError(f"{code} {message}")


def _mailbox_policy(message: str) -> bool:
    # 5.7.1 is used both for relay denial and for "recipient does not accept mail from you".
    return bool(re.search(r"mailbox|recipient|user|address rejected", message, re.I))


def build_transport(smtp_url: str | None, outbox_dir: Path, timeout: float = 30.0) -> Transport:
    if smtp_url:
        return SmtpTransport(smtp_url, timeout=timeout)
    return OutboxTransport(outbox_dir)
