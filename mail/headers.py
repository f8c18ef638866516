"""What may go into a message header: rendered values are sanitised on the way out, and the
values that end up in headers are checked on the way in (enrollment fields, sender fields).

Python's email package before 3.11.10 (CVE-2024-6923) decodes an RFC 2047 encoded word such as
`=?utf-8?q?=0D=0ABcc:_x@evil?=` in a header value and writes the decoded line break out raw when
it folds the header: a recipient field rendered into the subject could add `Bcc:` or provider
headers and replace the body. We neutralise it ourselves, whatever the Python version."""

from __future__ import annotations

import re
import unicodedata
from email.errors import HeaderParseError
from email.headerregistry import Address
from typing import Any

from email_validator import EmailNotValidError, validate_email

# An encoded word, leniently (the parser is lenient too): `=?charset?enc?text?=`.
_ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[^?\s]*\?[^\s]*?\?=")
# Line and paragraph separators are not category Cc, but str.splitlines() breaks on them.
_BREAKS = {"\u2028", "\u2029", "\x85"}


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) == "Cc" or ch in _BREAKS


def clean_header(value: str) -> str:
    """A header value from data, safe to set: control characters (CR, LF, NUL, ...) become
    spaces, encoded words are removed and any `=?` left cannot start one, whitespace collapses."""
    value = "".join(" " if _is_control(ch) else ch for ch in value)
    value = _ENCODED_WORD.sub(" ", value)
    while "=?" in value:  # "=??" would leave one behind a single pass
        value = value.replace("=?", "=")
    return " ".join(value.split())


def has_control(value: str) -> bool:
    return any(_is_control(ch) for ch in value)


def field_problem(fields: dict[str, Any]) -> str | None:
    """Why these recipient fields cannot be enrolled, or None. Field values are rendered into
    subjects: a control character in one is refused at the door rather than stripped later."""
    for name, value in fields.items():
        if has_control(name):
            return f"field name {name!r} contains a control character"
        if isinstance(value, str) and has_control(value):
            return f"field {name!r} contains a control character"
    return None


def check_address(value: str) -> str:
    """A sender or reply-to address as the message builder and SMTP will take it (a bare
    addr-spec): the value stripped, or ValueError saying why not."""
    value = value.strip()
    if has_control(value) or "=?" in value:
        raise ValueError("must be a plain email address (no control characters or encoded words)")
    try:
        validate_email(value, check_deliverability=False, globally_deliverable=False)
        Address(addr_spec=value)
    except (EmailNotValidError, HeaderParseError, ValueError, IndexError) as exc:
        raise ValueError(f"not a valid email address: {exc}") from exc
    return value


def check_display_name(value: str) -> str:
    """A sender's display name: no control characters or encoded words (we encode it ourselves)."""
    if has_control(value):
        raise ValueError("must not contain control characters")
    if "=?" in value:
        raise ValueError("must not contain an RFC 2047 encoded word ('=?')")
    return value.strip()
