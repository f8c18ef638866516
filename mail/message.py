"""Assemble one campaign message: multipart text + HTML, and the headers that make it mail a
sender can put their domain behind (RFC 8058 one-click unsubscribe, List-Id, correlation ids)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr

# Long headers stay on one line (RFC 5322 allows 998): a folded or encoded List-Unsubscribe
# breaks one-click unsubscribe with some receivers.
MAIL_POLICY = policy.SMTP.clone(max_line_length=998)


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
    test: bool = False


def sender_domain(from_email: str) -> str:
    return parseaddr(from_email)[1].rpartition("@")[2] or "localhost"


def build_message(parts: MessageParts) -> tuple[EmailMessage, Envelope]:
    domain = sender_domain(parts.from_email)
    msg = EmailMessage(policy=MAIL_POLICY)
    msg["From"] = formataddr((parts.from_name or "", parts.from_email))
    msg["To"] = parts.to
    if parts.reply_to:
        msg["Reply-To"] = parts.reply_to
    msg["Subject"] = parts.subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    # The delivery id rides in the Message-ID too: providers echo it back as a fallback handle.
    msg["Message-ID"] = f"<{parts.delivery_id}@{domain}>"
    msg["X-Drip-Delivery-Id"] = parts.delivery_id
    unsubscribe = f"<{parts.unsubscribe_url}>"
    if parts.unsubscribe_mailto:
        unsubscribe += (
            f", <mailto:{parts.unsubscribe_mailto}?subject=unsubscribe%20{parts.delivery_id}>"
        )
    msg["List-Unsubscribe"] = unsubscribe
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["List-Id"] = f"{_list_name(parts.campaign_name)} <campaign-{parts.campaign_id}.{domain}>"
    # Where each provider echoes our id back in its webhooks (reference §7).
    tag = {"drip_delivery_id": parts.delivery_id}
    msg["X-SMTPAPI"] = json.dumps({"unique_args": tag, "category": ["drip"]})
    msg["X-Mailgun-Variables"] = json.dumps(tag)
    msg["X-PM-Metadata-drip_delivery_id"] = parts.delivery_id
    msg["X-SES-MESSAGE-TAGS"] = f"drip_delivery_id={parts.delivery_id}"
    if parts.ses_configuration_set:
        msg["X-SES-CONFIGURATION-SET"] = parts.ses_configuration_set
    if parts.test:
        msg["X-Drip-Test"] = "true"
    msg.set_content(parts.text)
    msg.add_alternative(parts.html, subtype="html")
    return msg, Envelope(sender=Address(addr_spec=parts.from_email).addr_spec, recipient=parts.to)


def _list_name(name: str) -> str:
    cleaned = "".join(ch for ch in name if ch.isprintable() and ch not in '"\\<>')
    return f'"{cleaned}"' if cleaned else '"drip"'
