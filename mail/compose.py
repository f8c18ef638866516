"""One campaign message from its parts: render, add the unsubscribe link and tracking, build.

Used by the send activity for journeys and by the API's test-send, so a test message is exactly
what a recipient would get (marked as a test, and without tracking)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mail.message import Envelope, MessageParts
from mail.mime import WireMessage, build_wire
from mail.render import build_context, render
from mail.tokens import Tokens
from mail.tracking import add_open_pixel, add_unsubscribe_footer, rewrite_links


class RenderFailed(Exception):
    """A template failed at render time (not a missing field: those render empty)."""


@dataclass
class Draft:
    delivery_id: str
    email: str
    campaign_id: int
    campaign_name: str
    from_email: str
    step_order: int
    step_subject: str
    subject: str  # the template of the subject actually sent (the step's or its alternative's)
    html: str
    text: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    from_name: str | None = None
    reply_to: str | None = None
    test: bool = False
    event: dict[str, Any] | None = None  # the trigger event, as templates see it


@dataclass
class Composed:
    message: WireMessage
    envelope: Envelope
    links: list[str]


def compose(
    draft: Draft,
    tokens: Tokens,
    public_url: str,
    *,
    tracking: bool,
    unsubscribe_mailto: str | None = None,
    provider: str | None = None,
) -> Composed:
    parts, links = message_parts(
        draft,
        tokens,
        public_url,
        tracking=tracking,
        unsubscribe_mailto=unsubscribe_mailto,
        provider=provider,
    )
    message, envelope = build_wire(parts)
    return Composed(message, envelope, links)


def message_parts(
    draft: Draft,
    tokens: Tokens,
    public_url: str,
    *,
    tracking: bool,
    unsubscribe_mailto: str | None = None,
    provider: str | None = None,
) -> tuple[MessageParts, list[str]]:
    """What the message is made of, rendered and tracked, and the links it tracks."""
    unsubscribe_url = f"{public_url}/u/{tokens.unsubscribe_token(draft.delivery_id)}"
    context = build_context(
        draft.email,
        draft.fields,
        campaign={"id": draft.campaign_id, "name": draft.campaign_name},
        step={"order": draft.step_order, "subject": draft.step_subject},
        unsubscribe_url=unsubscribe_url,
        event=draft.event,
    )
    try:
        rendered = render(draft.subject, draft.html, draft.text, context)
    except Exception as exc:
        raise RenderFailed(str(exc)) from exc
    html, text = add_unsubscribe_footer(rendered.html, rendered.text, unsubscribe_url)
    links: list[str] = []
    if tracking and not draft.test:
        html, links = rewrite_links(html, draft.delivery_id, tokens, public_url)
        html = add_open_pixel(html, draft.delivery_id, tokens, public_url)
    subject = f"[Test] {rendered.subject}" if draft.test else rendered.subject
    parts = MessageParts(
        delivery_id=draft.delivery_id,
        to=draft.email,
        from_email=draft.from_email,
        from_name=draft.from_name,
        reply_to=draft.reply_to,
        subject=subject,
        html=html,
        text=text,
        unsubscribe_url=unsubscribe_url,
        campaign_id=draft.campaign_id,
        campaign_name=draft.campaign_name,
        unsubscribe_mailto=unsubscribe_mailto,
        provider=provider,
        test=draft.test,
    )
    return parts, links
