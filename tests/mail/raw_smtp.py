"""An aiosmtpd server that keeps the raw bytes of each message it receives (DATA as sent, before
any parsing), with its envelope: what a receiving server really gets."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.conftest import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def header_lines(self) -> list[bytes]:
        """The header block's physical lines (folded lines stay separate)."""
        return self.data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")

    def headers_named(self, name: str) -> list[bytes]:
        prefix = name.lower().encode() + b":"
        return [line for line in self.header_lines if line.lower().startswith(prefix)]


class _Keeper:
    def __init__(self) -> None:
        self.received: list[Received] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        content = envelope.original_content or b""
        self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), content))
        return "250 OK"


@contextlib.contextmanager
def raw_smtp() -> Iterator[tuple[str, list[Received]]]:
    """(smtp url, received list) of a running server."""
    keeper = _Keeper()
    port = free_port()
    controller = Controller(keeper, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}", keeper.received
    finally:
        controller.stop()
