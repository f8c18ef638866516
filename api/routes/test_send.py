"""`POST /api/campaigns/{id}/test-send`: every step (or one) to an address, now, as a test —
outside any journey and outside stats, so a campaign can be checked in a real inbox."""

from __future__ import annotations

from typing import Annotated

from email_validator import EmailNotValidError
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from ulid import ULID

from api.deps import SessionDep, SettingsDep
from api.enrollment import normalise_email
from api.errors import invalid, not_found
from api.routes.campaigns import load_or_404
from mail.compose import Composed, Draft, RenderFailed, compose
from mail.tokens import Tokens
from mail.transport import RecipientRejected, TransportError, build_transport
from settings import Settings
from storage.models import Step, Template

router = APIRouter(prefix="/api/campaigns", tags=["campaigns"])


class TestSendRequest(BaseModel):
    email: Annotated[str, Field(max_length=320)]
    fields: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    step_id: int | None = None
    alternative: bool = False  # send the steps' alternative messages where they have one


class TestSent(BaseModel):
    step_id: int
    step_order: int
    subject: str
    message_id: str


class TestSendResult(BaseModel):
    sent: list[TestSent]


def _drafts(
    session: Session, settings: Settings, campaign_id: int, body: TestSendRequest, email: str
) -> list[tuple[Step, Draft]]:
    campaign = load_or_404(session, campaign_id)
    query = select(Step).where(Step.campaign_id == campaign_id).order_by(col(Step.step_order))
    steps = list(session.exec(query))
    if body.step_id is not None:
        steps = [s for s in steps if s.id == body.step_id]
        if not steps:
            raise invalid(
                ["body", "step_id"], f"step {body.step_id} is not a step of campaign {campaign_id}"
            )
    drafts = []
    for step in steps:
        alternative = body.alternative and step.alt_template_id is not None
        template = session.get(Template, step.alt_template_id if alternative else step.template_id)
        assert template is not None
        drafts.append(
            (
                step,
                Draft(
                    delivery_id=f"test_{ULID()}",
                    email=email,
                    fields=dict(body.fields),
                    campaign_id=campaign.id or 0,
                    campaign_name=campaign.name,
                    from_email=campaign.from_email or settings.from_email,
                    from_name=campaign.from_name,
                    reply_to=campaign.reply_to,
                    step_order=step.step_order,
                    step_subject=step.subject,
                    subject=(step.alt_subject if alternative else None) or step.subject,
                    html=template.html,
                    text=template.text,
                    test=True,
                ),
            )
        )
    return drafts


@router.post("/{campaign_id}/test-send", response_model=TestSendResult)
async def test_send(
    campaign_id: int, body: TestSendRequest, session: SessionDep, settings: SettingsDep
) -> TestSendResult:
    try:
        email = normalise_email(body.email)
    except EmailNotValidError as exc:
        raise invalid(["body", "email"], f"invalid email: {exc}") from exc
    drafts = await run_in_threadpool(_drafts, session, settings, campaign_id, body, email)
    if not drafts:
        raise not_found("steps of campaign", campaign_id)
    tokens = Tokens(settings.secret_key)
    transport = build_transport(
        settings.smtp_url, settings.outbox_dir, settings.smtp_timeout_seconds
    )
    sent: list[TestSent] = []
    for step, draft in drafts:
        try:
            composed: Composed = compose(draft, tokens, settings.public_url, tracking=False)
        except RenderFailed as exc:
            raise invalid(["body", "fields"], f"step {step.id} failed to render: {exc}") from exc
        try:
            await transport.send(composed.message, composed.envelope)
        except (TransportError, RecipientRejected) as exc:
            raise HTTPException(502, f"the mail transport refused the test message: {exc}") from exc
        sent.append(
            TestSent(
                step_id=step.id or 0,
                step_order=step.step_order,
                subject=str(composed.message["Subject"]),
                message_id=str(composed.message["Message-ID"]).strip("<>"),
            )
        )
    return TestSendResult(sent=sent)
