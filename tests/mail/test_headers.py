"""Header injection (CVE-2024-6923 and plain CR/LF): recipient fields are rendered into the
subject, and on Python before 3.11.10 an RFC 2047 encoded word in one added headers and replaced
the body. Asserted on the raw bytes a real SMTP server receives."""

from __future__ import annotations

import pytest

from mail.compose import Draft, compose
from mail.headers import check_address, check_display_name, clean_header, field_problem
from mail.message import MessageParts, build_message
from mail.tokens import Tokens
from mail.transport import SmtpTransport
from tests.mail.raw_smtp import raw_smtp

# The published attack: an encoded word whose decoded text holds CRLF, new headers and a body.
ATTACK = (
    '=?utf-8?q?=0D=0ABcc:_attacker@evil.example=0D=0AX-SMTPAPI:_{"to":["x@evil.example"]}'
    "=0D=0A=0D=0AYou_have_been_owned?="
)
TOKENS = Tokens("header-test-secret-0123456789abcdef")


def draft(**extra: object) -> Draft:
    values: dict[str, object] = dict(
        delivery_id="snd_01JQ8ZK3V6W7X8Y9Z0ABCDEFGH",
        email="jane@example.org",
        campaign_id=1,
        campaign_name="Onboarding",
        from_email="news@sender.example",
        from_name="Acme News",
        step_order=1,
        step_subject="s",
        subject="Hello {{ first_name }}, here is the long subject line of our newsletter",
        html="<p>The real body</p>",
        text=None,
        fields={"first_name": ATTACK},
    )
    values.update(extra)
    return Draft(**values)  # type: ignore[arg-type]


async def send_raw(*drafts: Draft) -> list:  # type: ignore[type-arg]
    with raw_smtp() as (url, received):
        transport = SmtpTransport(url)
        for d in drafts:
            composed = compose(d, TOKENS, "https://mail.example.com", tracking=True)
            await transport.send(composed.message, composed.envelope)
        return list(received)


def assert_clean(got) -> None:  # type: ignore[no-untyped-def]
    names = [line.split(b":", 1)[0].lower() for line in got.header_lines if line[:1] not in b" \t"]
    assert b"bcc" not in names
    assert b"x-smtpapi" not in names
    assert names.count(b"subject") == 1 and names.count(b"from") == 1
    assert got.rcpt_tos == ["jane@example.org"]
    body = got.data.split(b"\r\n\r\n", 1)[1]
    assert b"owned" not in body and b"The real body" in body
    assert b"=?" not in b"".join(got.headers_named("Subject"))


async def test_an_encoded_word_in_a_field_cannot_add_headers_or_replace_the_body() -> None:
    [got] = await send_raw(draft())
    assert_clean(got)
    assert b"owned" not in got.data and b"evil.example" not in got.data
    [subject] = got.headers_named("Subject")
    assert subject.startswith(b"Subject: Hello , here is the long subject")


async def test_line_breaks_and_encoded_words_in_any_data_header_are_neutralised() -> None:
    # Values the API refuses, as they might still sit in an old database row.
    evil = "x\r\nBcc: attacker@evil.example\r\n\r\nYou have been owned"
    [got] = await send_raw(
        draft(
            subject=f"Hi {{{{ first_name }}}} {evil}",
            fields={"first_name": "Jane\u2028Bcc: attacker@evil.example"},
            from_name=f"{ATTACK} Acme\nBcc: attacker@evil.example",
            reply_to="help@sender.example\r\nBcc: attacker@evil.example",
            campaign_name=f"Camp {ATTACK}",
        )
    )
    assert_clean(got)
    for line in got.header_lines:
        assert b"\x00" not in line and b"\r" not in line


def test_clean_header() -> None:
    assert clean_header("Hello\r\nBcc: x@y\x00 there") == "Hello Bcc: x@y there"
    assert clean_header(f"Hi {ATTACK} you") == "Hi you"
    assert clean_header("=?utf-8?b?QmNjOg==?=") == ""
    assert "=?" not in clean_header("a =?utf-8?q?x y?= =?? b")  # leftovers cannot start one
    assert clean_header("Grüße, Jane — 50% off ✓") == "Grüße, Jane — 50% off ✓"


def test_the_builder_itself_sanitises_the_subject() -> None:
    parts = MessageParts(
        delivery_id="snd_1",
        to="jane@example.org",
        from_email="news@sender.example",
        subject=f"Hi {ATTACK}",
        html="<p>x</p>",
        text="x",
        unsubscribe_url="https://mail.example.com/u/t",
        campaign_id=1,
        campaign_name="c",
    )
    raw = build_message(parts)[0].as_bytes()
    assert b"Bcc:" not in raw and b"owned" not in raw


def test_control_characters_in_fields_are_refused() -> None:
    assert field_problem({"first_name": "Jane", "age": 3, "vip": True}) is None
    assert field_problem({"first_name": "Jane\r\nBcc: x@y"}) == (
        "field 'first_name' contains a control character"
    )
    assert field_problem({"city": "Paris\x00"}) is not None
    assert field_problem({"a\nb": "x"}) is not None


@pytest.mark.parametrize(
    "value", ["x@y.example\r\nBcc: a@b.example", "not an address", "a@b@c.example", ATTACK, ""]
)
def test_sender_addresses_are_checked(value: str) -> None:
    with pytest.raises(ValueError):
        check_address(value)


def test_display_names_are_checked() -> None:
    assert check_display_name(" Acme News ") == "Acme News"
    for bad in ("Acme\r\nBcc: x@y", ATTACK, "Acme\x00"):
        with pytest.raises(ValueError):
            check_display_name(bad)
