"""Golden tests: the bytes template writes, byte for byte, what the `email` package writes for
the same inputs, Date and boundary, in all four forms SMTP may ask for (8bit or 7bit, SMTPUTF8
or not); and it is the template, not the package, that builds the common message."""

from __future__ import annotations

import email
import email.policy
import random
import re
from dataclasses import replace

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from mail.message import MessageParts, build_message, flatten
from mail.mime import WireMessage, build_wire

DATE = "Tue, 01 Dec 2026 14:59:02 +0000"
BOUNDARY = "===============4827163549012345678=="
FORMS = [(utf8, eight_bit) for utf8 in (False, True) for eight_bit in (True, False)]

BASE = MessageParts(
    delivery_id="01JQ8ZK3V6W7X8Y9Z0ABCDEFGH",
    to="jane@example.org",
    from_email="news@sender.example",
    from_name="Acme News",
    reply_to="help@sender.example",
    subject="Welcome, Jane",
    html='<html><body><p>Hi Jane</p><a href="https://shop.example/a">a</a></body></html>',
    text="Hi Jane\n\na <https://shop.example/a>\n",
    unsubscribe_url="https://mail.example.com/u/AbCdEf0123456789.sig",
    campaign_id=7,
    campaign_name='Onboarding "Q1" <beta>',
)


def same_as_package(parts: MessageParts, boundary: str | None = BOUNDARY) -> WireMessage:
    """Build both ways and compare every form; the built message is returned for more checks."""
    built, envelope = build_wire(parts, date=DATE, boundary=boundary)
    reference, reference_envelope = build_message(parts, date=DATE, boundary=boundary)
    for utf8, eight_bit in FORMS:
        expected = flatten(reference, utf8=utf8, eight_bit=eight_bit)
        assert built.wire(utf8=utf8, eight_bit=eight_bit) == expected, (utf8, eight_bit)
    assert built.data == flatten(reference)
    assert envelope == reference_envelope
    assert built.subject == str(reference["Subject"])
    assert built.message_id == str(reference["Message-ID"]).strip("<>")
    assert built.delivery_id == parts.delivery_id
    return built


LONG_WORDS = "Équipe — a long paragraph of words " * 80
ASCII_LONG = "a long paragraph of plain words " * 40  # one 1,280-column line
OVER_998 = "x" * 1200  # one word longer than SMTP's line limit

# (name, changes, built by the template?)
CASES = [
    ("ascii", {}, True),
    ("no from name", {"from_name": None}, True),
    ("from name with specials, quoted", {"from_name": 'Jo "JJ" Smith, Esq.'}, True),
    ("from name with a backslash", {"from_name": "Back\\slash (Team)"}, True),
    ("no reply-to", {"reply_to": None}, True),
    ("mailto unsubscribe", {"unsubscribe_mailto": "unsub@sender.example"}, True),
    ("test mode", {"test": True, "subject": "[Test] Welcome"}, True),
    ("subject with accents", {"subject": "Bienvenue, Élodie"}, False),
    ("subject in CJK", {"subject": "欢迎加入我们的社区"}, False),
    ("subject with emoji", {"subject": "Welcome 🎉 to the club"}, False),
    ("long ASCII subject, folded", {"subject": ASCII_LONG}, False),
    ("long non-ASCII subject", {"subject": LONG_WORDS[:400]}, False),
    ("empty subject", {"subject": ""}, False),
    ("from name with accents", {"from_name": "José Ñúñez"}, False),
    ("from name in CJK", {"from_name": "山田太郎"}, False),
    ("from name with emoji", {"from_name": "Acme 🚀"}, False),
    ("campaign name with accents", {"campaign_name": "Été 2026"}, False),
    ("long campaign name, List-Id folded", {"campaign_name": "Spring sale " * 90}, False),
    ("campaign name near the limit", {"campaign_name": "n" * 900}, True),
    ("long unsubscribe URL", {"unsubscribe_url": f"https://m.example/u/{'t' * 900}"}, True),
    # "List-Unsubscribe: <" + "https://m.example/u/" + token + ">": 998 columns, then 999.
    (
        "List-Unsubscribe at the limit",
        {"unsubscribe_url": f"https://m.example/u/{'t' * 958}"},
        True,
    ),
    ("List-Unsubscribe one over", {"unsubscribe_url": f"https://m.example/u/{'t' * 959}"}, False),
    (
        "unsubscribe URL over the limit",
        {"unsubscribe_url": f"https://m.example/u/{'t' * 990}"},
        False,
    ),
    ("non-ASCII text, short lines: 8bit", {"text": "Hi Jane ✓\nÀ bientôt\n"}, True),
    ("non-ASCII html, short lines: 8bit", {"html": "<p>Hi Jane ✓</p>"}, True),
    (
        "long ASCII lines: quoted-printable",
        {"text": ASCII_LONG, "html": f"<p>{ASCII_LONG}</p>"},
        True,
    ),
    ("long non-ASCII lines", {"text": LONG_WORDS, "html": f"<p>{LONG_WORDS}</p>"}, True),
    ("lines over 998", {"text": OVER_998, "html": f"<p>{OVER_998}</p>"}, True),
    (
        "mostly non-ASCII long lines: base64",
        {"text": "日本語のテキスト" * 60, "html": "中文" * 500},
        True,
    ),
    ("long text over ten lines", {"text": (ASCII_LONG + "\n") * 12}, True),
    ("trailing spaces and tabs", {"text": "line \nline\t\n" + "y " * 60 + "\n"}, True),
    ("CR and CRLF line ends", {"text": "a\r\nb\rc\n", "html": "<p>a</p>\r\n<p>b</p>\r"}, True),
    ("dots and From at line starts", {"text": ".\n..\nFrom here\n" + "." * 100}, True),
    ("empty bodies", {"text": "", "html": ""}, True),
    ("encoded word in subject is removed", {"subject": "Hi =?utf-8?q?x?= there"}, True),
    ("odd delivery id, Message-ID by the package", {"delivery_id": "a b"}, False),
]


@pytest.mark.parametrize(
    ("changes", "templated"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bytes_match_the_email_package(changes: dict[str, object], templated: bool) -> None:
    built = same_as_package(replace(BASE, **changes))  # type: ignore[arg-type]
    assert built.templated is templated


@pytest.mark.parametrize("provider", ["sendgrid", "mailgun", "postmark", "ses", "resend", None])
@pytest.mark.parametrize("test", [False, True])
@pytest.mark.parametrize("reply_to", [None, "help@sender.example"])
@pytest.mark.parametrize("mailto", [None, "unsub@sender.example"])
def test_every_provider_and_mode(
    provider: str | None, test: bool, reply_to: str | None, mailto: str | None
) -> None:
    parts = replace(
        BASE,
        provider=provider,
        ses_configuration_set="drip-events" if provider == "ses" else None,
        test=test,
        reply_to=reply_to,
        unsubscribe_mailto=mailto,
    )
    assert same_as_package(parts).templated


@pytest.mark.parametrize("subject", ["Welcome", "Bienvenue, Élodie"])
def test_the_boundary_is_chosen_as_the_generator_chooses_it(
    subject: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both draw the same random token, and both check the parts for it. The generator's check
    # (a `$` regular expression) misses lines ending in CRLF, so a text holding the boundary as
    # a line keeps it in both: the same bytes. (Unguessable in practice: 63 random bits.)
    monkeypatch.setattr(random, "randrange", lambda _stop: 4242)
    taken = f"==============={4242:019d}=="
    parts = replace(BASE, subject=subject, text=f"see\n--{taken}\nabove\n")
    built = same_as_package(parts, boundary=None)
    assert built.boundary == taken


def test_a_random_boundary_in_the_generator_style_and_a_message_that_parses() -> None:
    built, _ = build_wire(replace(BASE, text="Hi Jane ✓\n"))
    assert re.fullmatch(r"={15}\d{19}==", built.boundary)
    assert built.boundary != build_wire(BASE)[0].boundary
    parsed = email.message_from_bytes(built.data, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    plain = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert plain.replace("\r\n", "\n") == "Hi Jane ✓\n"
    assert parsed.get_body(("html",)).get_content().strip() == BASE.html  # type: ignore[union-attr]
    assert parsed["Date"] and parsed["Subject"] == "Welcome, Jane"


# Text from every Unicode plane (no lone surrogates: no encoder takes them).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
ASCII = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=300)
PRINTABLE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=300)
HEADER = st.one_of(PRINTABLE, PRINTABLE, ASCII, TEXT)  # mostly what the template takes
LINES = st.lists(st.one_of(ASCII, TEXT, st.just("x" * 1000)), max_size=14).map("\n".join)


@settings(max_examples=200, deadline=None)
@given(
    subject=HEADER,
    from_name=st.one_of(st.none(), HEADER),
    campaign_name=HEADER,
    text=LINES,
    html=LINES,
    unsubscribe_path=st.from_regex(r"[A-Za-z0-9._~%=?/-]{0,990}", fullmatch=True),
    provider=st.sampled_from(["sendgrid", "mailgun", "postmark", "ses", "resend", None]),
    test=st.booleans(),
)
def test_any_input_matches_the_email_package(
    subject: str,
    from_name: str | None,
    campaign_name: str,
    text: str,
    html: str,
    unsubscribe_path: str,
    provider: str | None,
    test: bool,
) -> None:
    built = same_as_package(
        replace(
            BASE,
            subject=subject,
            from_name=from_name,
            campaign_name=campaign_name,
            text=text,
            html=html,
            unsubscribe_url=f"https://m.example/u/{unsubscribe_path}",
            provider=provider,
            ses_configuration_set=campaign_name if provider == "ses" else None,
            test=test,
        )
    )
    event("templated" if built.templated else "by the package")


def test_the_bytes_built_once_serve_every_form_they_are_identical_in() -> None:
    ascii_only, _ = build_wire(BASE, date=DATE, boundary=BOUNDARY)
    assert all(ascii_only.wire(utf8=u, eight_bit=e) is ascii_only.data for u, e in FORMS)
    eight_bit, _ = build_wire(replace(BASE, text="À bientôt\n"), date=DATE, boundary=BOUNDARY)
    assert eight_bit.wire(utf8=True) is eight_bit.data
    assert b"Content-Transfer-Encoding: 8bit" in eight_bit.data
    seven_bit = eight_bit.wire(eight_bit=False)  # for a server without 8BITMIME: flattened anew
    assert seven_bit.isascii() and b"Content-Transfer-Encoding: base64" in seven_bit
    encoded, _ = build_wire(replace(BASE, subject="Été"), date=DATE, boundary=BOUNDARY)
    assert not encoded.templated and encoded.wire() is encoded.data
    assert "Subject: Été".encode() in encoded.wire(utf8=True)  # SMTPUTF8: the header as it is
