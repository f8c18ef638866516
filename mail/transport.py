"""Where sent mail goes: an outbox folder of .eml files by default, or SMTP (aiosmtplib).

The message arrives as bytes, built once (mail/mime.py, long headers on one line: a folded or
RFC 2047-encoded List-Unsubscribe breaks one-click unsubscribe), and is handed over one SMTP
command at a time, so the caller learns the point of no return: the moment before the
end-of-data terminator is written, after which the server may have accepted the message.

SMTP failures are classified by stage and code, because each class is handled differently by
the send activity: the recipient's mailbox refused at RCPT (the journey ends as bounced), the
message refused for good (the delivery is recorded failed, the journey goes on), the sender's
own setup is wrong (nobody is blamed: retried and reported loudly), or anything else (retried
with backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from mail.message import Envelope
from mail.message import flatten as flatten  # bench/raw_worker.py flattens with it from here
from mail.mime import WireMessage

# Awaited once the whole message is written and before the terminator that commits it: if it
# raises, the transaction is abandoned unterminated, and the server never accepts the message.
NoReturnHook = Callable[[], Awaitable[None]]


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


class OutcomeUnknown(TransportError):
    """The terminator was written but no reply came: the server may or may not have the
    message. Only this failure comes after the point of no return."""


class MessageRefused(Exception):
    """The server refused this message for good (size, content, policy): not the mailbox."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.smtp_message = message


class Transport(Protocol):
    async def send(
        self, message: WireMessage, envelope: Envelope, no_return: NoReturnHook | None = None
    ) -> None: ...


class OutboxTransport:
    """Writes each message to `<dir>/<delivery id>.eml`; rewriting the same file is idempotent."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(
        self, message: WireMessage, envelope: Envelope, no_return: NoReturnHook | None = None
    ) -> None:
        tmp, target = await asyncio.to_thread(self._write, message)
        if no_return is not None:
            await no_return()
        os.replace(tmp, target)  # the point of no return of a folder

    def _write(self, message: WireMessage) -> tuple[Path, Path]:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{message.delivery_id}.eml"
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(message.data)
        return tmp, target


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

    async def send(
        self, message: WireMessage, envelope: Envelope, no_return: NoReturnHook | None = None
    ) -> None:
        kept = None
        stage = "connect"
        try:
            kept = await self._checkout()
            client = kept.client
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()
            utf8 = not (envelope.sender + envelope.recipient).isascii()
            eight_bit = client.supports_extension("8bitmime")
            data = message.wire(utf8=utf8, eight_bit=eight_bit)
            options = ["BODY=8BITMIME"] if eight_bit else []
            if utf8:
                options.append("SMTPUTF8")
            encoding = "utf-8" if utf8 else "ascii"
            stage = "MAIL"
            await client.mail(envelope.sender, options=options, encoding=encoding)
            stage = "RCPT"
            await client.rcpt(envelope.recipient, encoding=encoding)
            stage = "DATA"
            await _data(client, data, no_return, self.timeout)
        except BaseException as exc:
            if kept is not None:
                _close(kept.client)
            translated = _translate(exc, stage)
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


class _Terminated(Exception):
    """Raised (wrapping the cause) for a failure after the terminator was written."""


async def _data(
    client: aiosmtplib.SMTP, data: bytes, no_return: NoReturnHook | None, wait: float
) -> None:
    """DATA, the message, then the terminator: aiosmtplib's `data()` writes message and
    terminator in one go, which would leave no moment to record that the point of no return
    is being passed. One send at a time uses a kept connection, so nothing interleaves."""
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    start = await client.execute_command(b"DATA", timeout=wait)
    if start.code != aiosmtplib.SMTPStatus.start_input:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    protocol.write(PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data)))
    if no_return is not None:
        await no_return()  # if this fails, we close unterminated: the server drops it
    protocol.write(b".\r\n")
    try:
        reply = await protocol.read_response(timeout=wait)
    except Exception as exc:
        raise _Terminated() from exc
    if reply.code != aiosmtplib.SMTPStatus.completed:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)


def _close(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(Exception):  # closing is best effort: the socket may be gone
        client.close()


def _translate(exc: BaseException, stage: str) -> BaseException:
    """An aiosmtplib failure as the send activity handles it; anything else unchanged."""
    if isinstance(exc, _Terminated):
        cause = exc.__cause__
        return OutcomeUnknown(f"no reply to the end of DATA: {type(cause).__name__}: {cause}")
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return SenderMisconfigured(f"authentication failed: {exc.code} {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPSenderRefused) and exc.code >= 500:
        return SenderMisconfigured(f"sender refused: {exc.code} {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _classify(exc.code, exc.message, stage)
    if isinstance(exc, (aiosmtplib.SMTPException, OSError)):
        return TransportError(f"{type(exc).__name__}: {exc}")
    return exc


_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SENDER_WORDS = re.compile(
    r"relay|authenticat|auth required|starttls|tls required|must issue", re.I
)
# Providers throttle with 5xx too (e.g. 550 5.7.1 "rate limited", 554 "too many messages").
_THROTTLE_WORDS = re.compile(
    r"throttl|rate limit|too many|try again later|temporarily|over quota|quota exceeded", re.I
)
_MAILBOX_WORDS = re.compile(
    r"mailbox (is )?unavailable|no such (user|mailbox|recipient)|user unknown|unknown user"
    r"|does not exist|mailbox not found|invalid recipient|(account|mailbox) (is )?disabled",
    re.I,
)


def _classify(code: int, message: str, stage: str = "RCPT") -> Exception:
    """By stage and code (reference §5):
    - 530/535/538, auth/TLS/relay wording, or 5.7.x before DATA not about the mailbox →
      SenderMisconfigured
    - 4xx, quota (5.4.5) or throttling wording → TransportError (retried with backoff)
    - at RCPT: the mailbox refused (5.1.x, 5.2.1, "mailbox unavailable" wording, a bare
      550/551/553) → RecipientRejected: the address is suppressed, the journey ends bounced
    - any other 5xx (size 5.3.4, content 5.6.0, policy...) → MessageRefused: failed, goes on."""
    text = f"{code} {message}"
    enhanced = _ENHANCED.search(message)
    klass, subject, detail = (
        (int(enhanced.group(1)), int(enhanced.group(2)), int(enhanced.group(3)))
        if enhanced
        else (code // 100, None, None)
    )
    if code in (530, 535, 538) or _SENDER_WORDS.search(message):
        return SenderMisconfigured(text)
    if not 500 <= code < 600 or klass == 4:
        return TransportError(text)
    if (subject, detail) == (4, 5) or _THROTTLE_WORDS.search(message):
        return TransportError(text)
    mailbox = subject == 1 or (subject, detail) == (2, 1) or bool(_MAILBOX_WORDS.search(message))
    about_mailbox = mailbox or re.search(r"recipient|mailbox|user", message, re.I)
    if subject == 7 and stage != "DATA" and not about_mailbox:  # e.g. our IP blocklisted
        return SenderMisconfigured(text)
    if stage == "RCPT" and (mailbox or (subject is None and code in (550, 551, 553))):
        return RecipientRejected(code, message)
    return MessageRefused(code, message)


def build_transport(smtp_url: str | None, outbox_dir: Path, timeout: float = 30.0) -> Transport:
    if smtp_url:
        return SmtpTransport(smtp_url, timeout=timeout)
    return OutboxTransport(outbox_dir)
