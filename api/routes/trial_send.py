"""`POST /api/campaigns/{id}/test-send`: every step (or one) to an address, now, as a test —
outside any journey and outside stats, so a campaign can be checked in a real inbox. (Named
"trial" in the code so that pytest never mistakes it for a test.)"""

from __future__ import annotations

from email_validator import EmailNotValidError
from fastapi import APIRouter, HTTPException
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from ulid import ULID

from api.deps import SessionDep, SettingsDep, load_or_404
from api.errors import invalid, not_found, problems
from api.schemas import TrialSendRequest, TrialSendResult, TrialSent
from mail.addresses import normalise_email
from mail.compose import Composed, Draft, RenderFailed, compose
from mail.tokens import Tokens
from mail.transport import RecipientRejected, TransportError, build_transport
from services import messages
from settings import Settings
from storage.models import Step, Template

router = APIRouter(prefix="/api/campaigns", tags=["campaigns"])


def _drafts(
    session: Session, settings: Settings, campaign_id: int, body: TrialSendRequest, email: str
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
        template = session.get(Template, messages.template_id(step, alternative))
        assert template is not None
        draft = messages.draft(
            delivery_id=f"test_{ULID()}",
            email=email,
            fields=body.fields,
            campaign=campaign,
            step=step,
            subject=messages.subject_of(step, alternative),
            template=template,
            default_from=settings.from_email,
            test=True,
        )
        drafts.append((step, draft))
    return drafts


@router.post(
    "/{campaign_id}/test-send",
    operation_id="sendTestMessage",
    summary="Send a campaign's steps to a test address",
    responses=problems(404, 502),
    response_model=TrialSendResult,
)
async def send_trial(
    campaign_id: int, body: TrialSendRequest, session: SessionDep, settings: SettingsDep
) -> TrialSendResult:
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
    sent: list[TrialSent] = []
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
            TrialSent(
                step_id=step.id or 0,
                step_order=step.step_order,
                subject=composed.message.subject,
                message_id=composed.message.message_id,
            )
        )
    return TrialSendResult(sent=sent)
