"""The messages we build: headers a mailbox provider acts on, correlation ids for every provider,
text + HTML parts with a visible unsubscribe link, tracked links and the pixel.
(tests/api/test_tracking.py checks the same on messages received over real SMTP.)"""

from __future__ import annotations

import email
import email.policy
import json
import re

from mail.message import MessageParts, build_message, relay_provider
from mail.tokens import Tokens
from mail.tracking import add_open_pixel, add_unsubscribe_footer, rewrite_links

BASE = "https://mail.example.com"
DELIVERY = "01JQ8ZK3V6W7X8Y9Z0ABCDEFGH"
TOKENS = Tokens("test-secret")
UNSUB = f"{BASE}/u/{TOKENS.unsubscribe_token(DELIVERY)}"


def parts(**extra: object) -> MessageParts:
    values: dict[str, object] = dict(
        delivery_id=DELIVERY,
        to="jane@example.org",
        from_email="news@sender.example",
        from_name="Acme News",
        reply_to="help@sender.example",
        subject="Welcome, Jane",
        html="<html><body><p>Hi</p></body></html>",
        text="Hi\n",
        unsubscribe_url=UNSUB,
        campaign_id=7,
        campaign_name='Onboarding "Q1" <beta>',
    )
    values.update(extra)
    return MessageParts(**values)  # type: ignore[arg-type]


def reparse(message: email.message.EmailMessage) -> email.message.EmailMessage:
    """Through bytes and back, as the receiving server sees it."""
    return email.message_from_bytes(message.as_bytes(), policy=email.policy.default)  # type: ignore[return-value]


def test_headers_for_one_click_unsubscribe_and_lists() -> None:
    message, envelope = build_message(parts())
    got = reparse(message)
    assert got["From"] == "Acme News <news@sender.example>"
    assert got["To"] == "jane@example.org"
    assert got["Reply-To"] == "help@sender.example"
    assert got["Subject"] == "Welcome, Jane"
    assert got["Date"]
    assert got["List-Unsubscribe"] == f"<{UNSUB}>"
    assert got["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert got["List-Id"] == '"Onboarding Q1 beta" <campaign-7.sender.example>'
    assert envelope.sender == "news@sender.example" and envelope.recipient == "jane@example.org"
    assert "X-Drip-Test" not in got


def test_list_unsubscribe_stays_on_one_line() -> None:
    # A folded List-Unsubscribe breaks one-click with some receivers (reference §10).
    long_url = f"{BASE}/u/{'x' * 150}"
    raw = build_message(parts(unsubscribe_url=long_url, unsubscribe_mailto="unsub@sender.example"))[
        0
    ].as_bytes()
    line = next(line for line in raw.split(b"\r\n") if line.startswith(b"List-Unsubscribe:"))
    assert long_url.encode() in line and b"mailto:unsub@sender.example" in line


def test_mailto_is_added_when_configured() -> None:
    got = reparse(build_message(parts(unsubscribe_mailto="unsub@sender.example"))[0])
    https, mailto = [v.strip() for v in got["List-Unsubscribe"].split(",")]
    assert https == f"<{UNSUB}>"
    assert mailto == f"<mailto:unsub@sender.example?subject=unsubscribe%20{DELIVERY}>"


PROVIDER_HEADERS = {
    "sendgrid": "X-SMTPAPI",
    "mailgun": "X-Mailgun-Variables",
    "postmark": "X-PM-Metadata-drip_delivery_id",
    "ses": "X-SES-MESSAGE-TAGS",
}


def test_correlation_id_in_our_header_and_the_message_id() -> None:
    got = reparse(build_message(parts(ses_configuration_set="drip-events"))[0])
    assert got["Message-ID"] == f"<{DELIVERY}@sender.example>"
    assert got["X-Drip-Delivery"] == DELIVERY
    # The former name matches SpamAssassin's RAND_MKTG_HEADER; no provider header on a plain relay.
    assert "X-Drip-Delivery-Id" not in got
    assert not [h for h in [*PROVIDER_HEADERS.values(), "X-SES-CONFIGURATION-SET"] if h in got]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", DELIVERY)


def test_each_provider_gets_only_its_own_correlation_header() -> None:
    for provider, name in PROVIDER_HEADERS.items():
        got = reparse(build_message(parts(provider=provider, ses_configuration_set="drip-ev"))[0])
        assert [h for h in PROVIDER_HEADERS.values() if h in got] == [name], provider
        assert ("X-SES-CONFIGURATION-SET" in got) == (provider == "ses")
    got = reparse(build_message(parts(provider="sendgrid"))[0])
    assert json.loads(got["X-SMTPAPI"])["unique_args"] == {"drip_delivery_id": DELIVERY}
    got = reparse(build_message(parts(provider="mailgun"))[0])
    assert json.loads(got["X-Mailgun-Variables"]) == {"drip_delivery_id": DELIVERY}
    got = reparse(build_message(parts(provider="postmark"))[0])
    assert got["X-PM-Metadata-drip_delivery_id"] == DELIVERY
    got = reparse(build_message(parts(provider="ses", ses_configuration_set="drip-events"))[0])
    assert got["X-SES-MESSAGE-TAGS"] == f"drip_delivery_id={DELIVERY}"
    assert got["X-SES-CONFIGURATION-SET"] == "drip-events"
    assert not [
        h
        for h in PROVIDER_HEADERS.values()
        if h in reparse(build_message(parts(provider="resend"))[0])
    ]


def test_the_relay_provider_is_configured_or_inferred_from_the_relay_host() -> None:
    assert relay_provider(None, "smtp://apikey:k@smtp.sendgrid.net:587") == "sendgrid"
    assert relay_provider(None, "smtps://u:p@smtp.eu.mailgun.org:465") == "mailgun"
    assert relay_provider(None, "smtp://t:t@smtp.postmarkapp.com:587") == "postmark"
    assert relay_provider(None, "smtp://u:p@email-smtp.eu-west-1.amazonaws.com:587") == "ses"
    assert relay_provider(None, "smtp://resend:k@smtp.resend.com:465") == "resend"
    assert relay_provider(None, "smtp://mail.example.com:25") is None
    assert relay_provider(None, "smtp://smtp.sendgrid.net.evil.example") is None
    assert relay_provider(None, None) is None  # the outbox folder
    assert relay_provider("postmark", "smtp://mail.example.com") == "postmark"
    assert relay_provider("none", "smtp://smtp.sendgrid.net") is None


def test_test_sends_are_marked() -> None:
    assert reparse(build_message(parts(test=True))[0])["X-Drip-Test"] == "true"


def test_text_and_html_parts() -> None:
    got = reparse(build_message(parts(text="Hi Jane ✓\n", html="<p>Hi Jane ✓</p>"))[0])
    assert got.get_content_type() == "multipart/alternative"
    types = [p.get_content_type() for p in got.iter_parts()]
    assert types == ["text/plain", "text/html"]
    plain = got.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert plain.replace("\r\n", "\n") == "Hi Jane ✓\n"  # SMTP line endings
    assert got.get_body(("html",)).get_content().strip() == "<p>Hi Jane ✓</p>"  # type: ignore[union-attr]


def test_tracking_rewrites_links_adds_pixel_and_a_visible_unsubscribe_link() -> None:
    html = (
        '<html><body><a href="https://shop.example/a?x=1&amp;y=2">A</a> '
        "<a href='http://shop.example/b'>B</a> <a href=\"mailto:x@y\">mail</a></body></html>"
    )
    html, text = add_unsubscribe_footer(html, "Hi\n", UNSUB)
    assert UNSUB in html and UNSUB in text
    html, links = rewrite_links(html, DELIVERY, TOKENS, BASE)
    html = add_open_pixel(html, DELIVERY, TOKENS, BASE)
    # Original targets are returned (to be stored), unescaped; our own links are not wrapped.
    assert links == ["https://shop.example/a?x=1&y=2", "http://shop.example/b"]
    assert f'href="{BASE}/t/c/{TOKENS.click_token(DELIVERY, 0)}"' in html
    assert f"href='{BASE}/t/c/{TOKENS.click_token(DELIVERY, 1)}'" in html
    assert "shop.example" not in html and 'href="mailto:x@y"' in html
    assert f'href="{UNSUB}"' in html
    assert f'src="{BASE}/t/o/{TOKENS.open_token(DELIVERY)}.gif"' in html
    assert html.index("/t/o/") < html.index("</body>")
    # Tokens resolve to what they were made for, and only with our key.
    assert TOKENS.read_click(TOKENS.click_token(DELIVERY, 1)).link_index == 1  # type: ignore[union-attr]
    assert Tokens("other-secret").read_click(TOKENS.click_token(DELIVERY, 1)) is None
    assert TOKENS.read_open(TOKENS.click_token(DELIVERY, 1)) is None  # kinds do not mix


def test_template_showing_its_own_unsubscribe_link_gets_no_second_one() -> None:
    html = f'<body><a href="{UNSUB}">Leave</a></body>'
    text = f"Leave: {UNSUB}\n"
    assert add_unsubscribe_footer(html, text, UNSUB) == (html, text)


def test_bodies_are_encoded_at_76_columns_while_headers_stay_whole() -> None:
    # RFC 2045 caps quoted-printable lines at 76; the 998-column header policy made them 998
    # (SpamAssassin's MIME_QP_LONG_LINE).
    long_url = f"{BASE}/u/{'x' * 150}"
    words = "Équipe — a long paragraph of words " * 80
    message = build_message(parts(html=f"<p>{words}</p>", text=words, unsubscribe_url=long_url))[0]
    raw = message.as_bytes()
    head, body = raw.split(b"\r\n\r\n", 1)
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    assert f"List-Unsubscribe: <{long_url}>".encode() in head.split(b"\r\n")
    assert words in reparse(message).get_body(("plain",)).get_content()  # type: ignore[union-attr]
