"""Assemble one campaign message: multipart text + HTML, and the headers that make it mail a
sender can put their domain behind (RFC 8058 one-click unsubscribe, List-Id, correlation ids).

Every header value that comes from data (rendered subject, names, addresses) goes through
mail/headers.clean_header. Provider-specific correlation headers go only to the provider the
relay is: elsewhere they are noise that spam filters score (and Mailgun's stays visible)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.generator import BytesGenerator
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from io import BytesIO
from urllib.parse import urlsplit

from mail.headers import clean_header

# Long headers stay on one line (RFC 5322 allows 998): a folded or encoded List-Unsubscribe
# breaks one-click unsubscribe with some receivers.
MAIL_POLICY = policy.SMTP.clone(max_line_length=998)
# Bodies are encoded at 76 columns: RFC 2045 caps quoted-printable lines there, and spam filters
# score longer ones (SpamAssassin's MIME_QP_LONG_LINE).
BODY_POLICY = policy.SMTP.clone(max_line_length=76)

# Our correlation header. Older messages (and recorded histories) carry the former name,
# which spam filters score as a randomized marketing-tracking header: inbound paths read both.
DELIVERY_HEADER = "X-Drip-Delivery"
LEGACY_DELIVERY_HEADER = "X-Drip-Delivery-Id"
DELIVERY_HEADERS = (DELIVERY_HEADER, LEGACY_DELIVERY_HEADER)

# The relays whose provider reads a correlation header of its own (reference §7).
_RELAY_HOSTS = (
    ("sendgrid", re.compile(r"(^|\.)sendgrid\.net$")),
    ("mailgun", re.compile(r"(^|\.)mailgun\.org$")),
    ("postmark", re.compile(r"(^|\.)postmarkapp\.com$")),
    ("ses", re.compile(r"^email-smtp(-fips)?\.[a-z0-9-]+\.amazonaws\.com$")),
    ("resend", re.compile(r"(^|\.)resend\.com$")),
)


def relay_provider(configured: str | None, smtp_url: str | None) -> str | None:
    """The provider behind the SMTP relay: the one configured ("none": no provider), else the
    one its host name says, else None (a plain relay, or the outbox folder)."""
    if configured:
        return None if configured == "none" else configured
    host = (urlsplit(smtp_url).hostname or "").lower() if smtp_url else ""
    return next((name for name, pattern in _RELAY_HOSTS if pattern.search(host)), None)


@dataclass
class Envelope:
    sender: str
    recipient: str


@dataclass
class MessageParts:
    delivery_id: str
    to: str
    from_email: str
    subject: str
    html: str
    text: str
    unsubscribe_url: str
    campaign_id: int
    campaign_name: str
    from_name: str | None = None
    reply_to: str | None = None
    unsubscribe_mailto: str | None = None
    ses_configuration_set: str | None = None
    provider: str | None = None  # relay_provider(): which provider's correlation header to add
    test: bool = False


def sender_domain(from_email: str) -> str:
    return parseaddr(from_email)[1].rpartition("@")[2] or "localhost"


def message_headers(parts: MessageParts, date: str) -> list[tuple[str, str]]:
    """The message's own headers, in order, as the values set: one list for both builders (the
    `email` package's here, the bytes template's in mail/mime.py)."""
    domain = sender_domain(parts.from_email)
    from_email = clean_header(parts.from_email)
    headers = [
        ("From", formataddr((clean_header(parts.from_name or ""), from_email))),
        ("To", clean_header(parts.to)),
    ]
    if parts.reply_to:
        headers.append(("Reply-To", clean_header(parts.reply_to)))
    headers.append(("Subject", clean_header(parts.subject)))
    headers.append(("Date", date))
    # The delivery id rides in the Message-ID too: providers echo it back as a fallback handle.
    headers.append(("Message-ID", f"<{parts.delivery_id}@{domain}>"))
    headers.append((DELIVERY_HEADER, parts.delivery_id))
    unsubscribe = f"<{parts.unsubscribe_url}>"
    if parts.unsubscribe_mailto:
        unsubscribe += (
            f", <mailto:{parts.unsubscribe_mailto}?subject=unsubscribe%20{parts.delivery_id}>"
        )
    headers.append(("List-Unsubscribe", unsubscribe))
    headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    list_id = f"{_list_name(parts.campaign_name)} <campaign-{parts.campaign_id}.{domain}>"
    headers.append(("List-Id", list_id))
    headers.extend(_provider_headers(parts))
    if parts.test:
        headers.append(("X-Drip-Test", "true"))
    return headers


def message_date() -> str:
    return format_datetime(datetime.now(UTC))


def envelope_of(parts: MessageParts) -> Envelope:
    sender = Address(addr_spec=clean_header(parts.from_email)).addr_spec
    return Envelope(sender=sender, recipient=clean_header(parts.to))


def build_message(
    parts: MessageParts, *, date: str | None = None, boundary: str | None = None
) -> tuple[EmailMessage, Envelope]:
    """The message by the `email` package: the reference the bytes template is proven against,
    and the builder of what the template does not take (mail/mime.py). `date` and `boundary`
    fixed make the output reproducible; by default, now and a random boundary at flattening."""
    msg = EmailMessage(policy=MAIL_POLICY)
    for name, value in message_headers(parts, date or message_date()):
        msg[name] = value
    msg.policy = BODY_POLICY  # the parts are encoded now, with the policy they are made with
    msg.set_content(parts.text)
    msg.add_alternative(parts.html, subtype="html")
    msg.policy = MAIL_POLICY
    if boundary is not None:
        msg.set_boundary(boundary)
    return msg, envelope_of(parts)


def flatten(message: EmailMessage, *, utf8: bool = False, eight_bit: bool = True) -> bytes:
    """The message as it goes on the wire, CRLF line ends, our 998-column policy."""
    policy = MAIL_POLICY.clone(utf8=utf8, cte_type="8bit" if eight_bit else "7bit")
    out = BytesIO()
    BytesGenerator(out, policy=policy).flatten(message)
    return out.getvalue()


def _provider_headers(parts: MessageParts) -> list[tuple[str, str]]:
    """Where the relay's provider echoes our id back in its webhooks (reference §7)."""
    tag = {"drip_delivery_id": parts.delivery_id}
    if parts.provider == "sendgrid":
        return [("X-SMTPAPI", json.dumps({"unique_args": tag, "category": ["drip"]}))]
    if parts.provider == "mailgun":
        return [("X-Mailgun-Variables", json.dumps(tag))]
    if parts.provider == "postmark":
        return [("X-PM-Metadata-drip_delivery_id", parts.delivery_id)]
    if parts.provider == "ses":
        headers = [("X-SES-MESSAGE-TAGS", f"drip_delivery_id={parts.delivery_id}")]
        if parts.ses_configuration_set:
            headers.append(("X-SES-CONFIGURATION-SET", clean_header(parts.ses_configuration_set)))
        return headers
    # Resend documents no tag header: it echoes our own DELIVERY_HEADER, if anything.
    return []


def _list_name(name: str) -> str:
    cleaned = "".join(ch for ch in clean_header(name) if ch.isprintable() and ch not in '"\\<>')
    return f'"{cleaned}"' if cleaned else '"drip"'
