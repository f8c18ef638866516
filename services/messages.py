"""Building a message draft from a campaign's step, the same way for a journey's send and for a
test send, so a test shows exactly what recipients get."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mail.compose import Draft
from storage.models import Campaign, Step, Template, TrackedEvent
from storage.tracked_events import iso_utc


def draft(
    *,
    delivery_id: str,
    email: str,
    fields: Mapping[str, Any],
    campaign: Campaign,
    step: Step,
    subject: str,
    template: Template,
    default_from: str,
    test: bool = False,
    trigger: TrackedEvent | None = None,
) -> Draft:
    """The draft of a step's message (`subject` and `template`: the step's own, or its
    alternative's, see subject_of and template_id) for one address."""
    return Draft(
        delivery_id=delivery_id,
        email=email,
        fields=dict(fields),
        campaign_id=campaign.id or 0,
        campaign_name=campaign.name,
        from_email=campaign.from_email or default_from,
        from_name=campaign.from_name,
        reply_to=campaign.reply_to,
        step_order=step.step_order,
        step_subject=step.subject,
        subject=subject,
        html=template.html,
        text=template.text,
        test=test,
        event=event_context(trigger),
    )


def event_context(trigger: TrackedEvent | None) -> dict[str, Any] | None:
    """The tracked event that enrolled the journey, as templates see it (`{{ event.name }}`,
    `{{ event.properties.plan }}`)."""
    if trigger is None:
        return None
    return {
        "id": trigger.event_id,
        "name": trigger.name,
        "properties": dict(trigger.properties or {}),
        "occurred_at": iso_utc(trigger.occurred_at),
    }


def subject_of(step: Step, alternative: bool) -> str:
    """The subject template a step sends: its alternative's when that is the message chosen."""
    return (step.alt_subject if alternative else None) or step.subject


def template_id(step: Step, alternative: bool) -> int:
    """The template a step sends: its alternative's when that is the message chosen."""
    if alternative and step.alt_template_id is not None:
        return step.alt_template_id
    return step.template_id
