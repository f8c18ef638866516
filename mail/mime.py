"""The message as the wire carries it, built once, as bytes.

The common message (ASCII header values that fit on a line, text and HTML parts) is written
from a bytes template: header lines as they are, then the multipart/alternative body, its parts
encoded by the `email` package's own choice of Content-Transfer-Encoding and encoders. Anything
else (a value that needs RFC 2047 encoding, such as a non-ASCII subject or display name; a line
over the limit; a header or a shape the template does not know) is built by the `email` package
(mail/message.build_message). Either way the bytes are the ones the `email` package writes for
the same inputs, Date and boundary (tests/mail/test_mime.py proves it byte for byte). Building
and flattening through the package cost ~1 ms per message on the bench's template.
"""

from __future__ import annotations

import random
import re
import sys
from dataclasses import dataclass, field
from email.contentmanager import _encode_text  # type: ignore[attr-defined]
from email.generator import BytesGenerator
from email.generator import _fmt as _BOUNDARY_FORMAT  # type: ignore[attr-defined]

from mail.message import (
    BODY_POLICY,
    MAIL_POLICY,
    Envelope,
    MessageParts,
    build_message,
    envelope_of,
    flatten,
    message_date,
    message_headers,
)

# A value the package writes unchanged: printable ASCII words, one space apart, no encoded word.
_PLAIN = re.compile(r"[!-~]+(?: [!-~]+)*")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_ADDR_SPEC = rf"{_DOT_ATOM}@{_LABEL}(?:\.{_LABEL})*"
# What formataddr writes for an ASCII name: bare, or as atoms, or as a quoted string.
_PHRASE = rf'(?:{_ATOM}(?: {_ATOM})*|"(?:[ !#-\[\]-~]|\\["\\])*")'
_MAILBOX = re.compile(rf"{_ADDR_SPEC}|{_PHRASE} <{_ADDR_SPEC}>")
_MSG_ID = re.compile(rf"<{_DOT_ATOM}@{_LABEL}(?:\.{_LABEL})*>")
_DATE = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000")

# How the package parses each header we set; a name not listed is not taken by the template.
_SHAPES: dict[str, re.Pattern[str]] = {
    "From": _MAILBOX,
    "To": _MAILBOX,
    "Reply-To": _MAILBOX,
    "Date": _DATE,
    "Message-ID": _MSG_ID,
    **dict.fromkeys(
        (
            "Subject",
            "X-Drip-Delivery",
            "List-Unsubscribe",
            "List-Unsubscribe-Post",
            "List-Id",
            "X-SMTPAPI",
            "X-Mailgun-Variables",
            "X-PM-Metadata-drip_delivery_id",
            "X-SES-MESSAGE-TAGS",
            "X-SES-CONFIGURATION-SET",
            "X-Drip-Test",
        ),
        _PLAIN,
    ),
}
_LIMIT = MAIL_POLICY.max_line_length or 0  # 998: a longer header line is folded
_NEWLINE = re.compile(r"\r\n|\r|\n")  # the generator's line ends, written as CRLF


@dataclass(frozen=True)
class WireMessage:
    """One message, flattened: `data` is what goes to an 8BITMIME server for an ASCII envelope
    (and into the outbox); `wire()` gives the other forms SMTP may need."""

    data: bytes
    delivery_id: str
    subject: str  # as the Subject header reads, decoded
    message_id: str  # without the angle brackets
    templated: bool  # built from the bytes template (False: by the email package)
    parts: MessageParts = field(repr=False)
    date: str
    boundary: str

    def wire(self, *, utf8: bool = False, eight_bit: bool = True) -> bytes:
        """The bytes for a server with or without 8BITMIME, for an SMTPUTF8 envelope or not.
        The built bytes serve every case they are identical in: ASCII headers never change with
        utf8, an all-ASCII message never changes without 8bit. The rest is flattened anew."""
        if (utf8 and not self.templated) or (not eight_bit and not self.data.isascii()):
            message, _ = build_message(self.parts, date=self.date, boundary=self.boundary)
            return flatten(message, utf8=utf8, eight_bit=eight_bit)
        return self.data


def build_wire(
    parts: MessageParts, *, date: str | None = None, boundary: str | None = None
) -> tuple[WireMessage, Envelope]:
    """The message's bytes and envelope; `date` and `boundary` as build_message takes them."""
    date = date or message_date()
    headers = message_headers(parts, date)
    envelope = envelope_of(parts)
    lines = []
    for name, value in headers:
        shape = _SHAPES.get(name)
        if (
            shape is None
            or len(name) + 2 + len(value) > _LIMIT
            or "=?" in value
            or not shape.fullmatch(value)
        ):
            return _by_package(parts, date, boundary), envelope
        lines.append(f"{name}: {value}\r\n")
    lines.append("MIME-Version: 1.0\r\n")
    texts = [_part(parts.text, "plain", b""), _part(parts.html, "html", b"MIME-Version: 1.0\r\n")]
    if boundary is None:
        boundary = _boundary(b"\r\n".join(texts))
    lines.append(f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n')
    mark = f"--{boundary}".encode("ascii")
    data = b"".join(
        (
            "".join(lines).encode("ascii"),
            mark + b"\r\n",
            texts[0],
            b"\r\n" + mark + b"\r\n",
            texts[1],
            b"\r\n" + mark + b"--\r\n",
        )
    )
    values = dict(headers)
    return WireMessage(
        data=data,
        delivery_id=parts.delivery_id,
        subject=values["Subject"],
        message_id=values["Message-ID"].strip("<>"),
        templated=True,
        parts=parts,
        date=date,
        boundary=boundary,
    ), envelope


def _boundary(text: bytes) -> str:
    """A boundary as the generator makes one: random, in its style, and absent from the parts.
    The generator checks with a regular expression compiled anew per message (~0.5 ms on a
    35 KiB message); a boundary that is not in the text at all needs no check."""
    boundary: str = ("=" * 15) + (_BOUNDARY_FORMAT % random.randrange(sys.maxsize)) + "=="
    if b"--" + boundary.encode("ascii") in text:  # never in practice: let the generator pick
        return str(BytesGenerator._make_boundary(text))  # type: ignore[attr-defined]
    return boundary


def _part(content: str, subtype: str, extra: bytes) -> bytes:
    """One text part as the generator writes it: its headers, a blank line, the encoded body.
    The encoding is the package's choice (7bit, 8bit, quoted-printable or base64), by the
    package's heuristics and encoders, at the body policy's 76 columns (`_encode_text` is
    private: tests/mail/test_mime.py notices if it ever changes)."""
    cte, payload = _encode_text(content, "utf-8", None, BODY_POLICY)
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n'
    # An 8bit payload carries its UTF-8 bytes as surrogates, as the package writes them out.
    body = _NEWLINE.sub("\r\n", payload).encode("ascii", "surrogateescape")
    return head.encode("ascii") + extra + b"\r\n" + body


def _by_package(parts: MessageParts, date: str, boundary: str | None) -> WireMessage:
    message, _ = build_message(parts, date=date, boundary=boundary)
    data = flatten(message)
    return WireMessage(
        data=data,
        delivery_id=parts.delivery_id,
        subject=str(message["Subject"]),
        message_id=str(message["Message-ID"]).strip("<>"),
        templated=False,
        parts=parts,
        date=date,
        boundary=str(message.get_boundary()),  # chosen by the generator when not given
    )
