"""Enrollment and one recipient's journey."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy import func
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from api.deps import EngineDep, JourneysDep, SessionDep, SettingsDep, load_or_404
from api.errors import not_found, problems
from api.idempotency import Idempotent
from api.schemas import (
    BatchAccepted,
    EnrollmentPage,
    EnrollmentPublic,
    EnrollRequest,
    EnrollResult,
    JourneyPublic,
    Rejected,
    StepEngagement,
    batch_accepted,
)
from domain.journey import EventType, JourneyStatus
from mail.addresses import stored_form
from services import enrollment as enrolling
from services.enrollment_batches import accept, json_rows
from storage.models import Delivery, Enrollment, Event

router = APIRouter(prefix="/api/campaigns/{campaign_id}/recipients", tags=["recipients"])


@router.post(
    "",
    operation_id="enrollRecipients",
    summary="Enroll recipients in an active campaign",
    response_model=EnrollResult,
    dependencies=[Idempotent],
    responses={
        202: {"model": BatchAccepted, "description": "a large call, accepted as a batch"},
        **problems(404, 409),
    },
)
async def enroll(
    campaign_id: int,
    body: EnrollRequest,
    session: SessionDep,
    engine: EngineDep,
    journeys: JourneysDep,
    settings: SettingsDep,
) -> EnrollResult | JSONResponse:
    """Enroll recipients (up to 10,000 per call). An address is enrolled in a campaign at most
    once, ever; invalid or suppressed addresses are rejected with a reason, the rest enrolled.
    Up to DRIP_SYNC_ENROLL_LIMIT (1,000) recipients are enrolled before the answer (200); a
    larger call is stored and answered at once (202 with a batch id, see
    `GET /api/enrollment-batches/{id}`), and a batch job enrolls them."""
    campaign = await run_in_threadpool(load_or_404, session, campaign_id)
    enrolling.require_active(campaign)
    candidates = [enrolling.Candidate(r.email, r.fields) for r in body.recipients]
    if len(candidates) > settings.sync_enroll_limit:
        batch = await accept(engine, journeys.client, campaign_id, "api", json_rows(candidates))
        return JSONResponse(batch_accepted(batch).model_dump(mode="json"), status_code=202)
    summary = await enrolling.enroll(engine, journeys, campaign_id, candidates)
    return EnrollResult(
        enrolled=summary.enrolled,
        already_enrolled=summary.already_enrolled,
        rejected=[Rejected(email=r.email, reason=r.reason) for r in summary.rejected],
    )


@router.get(
    "",
    operation_id="listRecipients",
    summary="List a campaign's enrollments",
    responses=problems(404),
    response_model=EnrollmentPage,
)
def list_recipients(
    campaign_id: int,
    session: SessionDep,
    status: JourneyStatus | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> EnrollmentPage:
    load_or_404(session, campaign_id)
    where = [Enrollment.campaign_id == campaign_id]
    if status is not None:
        where.append(Enrollment.status == status)
    total = session.exec(select(func.count()).select_from(Enrollment).where(*where)).one()
    rows = session.exec(
        select(Enrollment).where(*where).order_by(col(Enrollment.id)).limit(limit).offset(offset)
    ).all()
    return EnrollmentPage(
        items=[_enrollment_public(e) for e in rows], total=total, limit=limit, offset=offset
    )


def _enrollment_public(e: Enrollment) -> EnrollmentPublic:
    return EnrollmentPublic(
        email=e.email,
        status=e.status,
        status_reason=e.status_reason,
        current_step=e.current_step,
        enrolled_at=e.created_at,
        finished_at=e.finished_at,
    )


def _load_enrollment(session: Session, campaign_id: int, email: str) -> Enrollment:
    load_or_404(session, campaign_id)
    normalised = stored_form(email)
    enrollment = session.exec(
        select(Enrollment).where(
            Enrollment.campaign_id == campaign_id, Enrollment.email == normalised
        )
    ).first()
    if enrollment is None:
        raise not_found("recipient", f"{email} in campaign {campaign_id}")
    return enrollment


def _steps_with_engagement(session: Session, enrollment_id: int) -> list[StepEngagement]:
    deliveries = session.exec(
        select(Delivery)
        .where(Delivery.enrollment_id == enrollment_id)
        .order_by(col(Delivery.step_order))
    ).all()
    events = session.exec(select(Event).where(Event.enrollment_id == enrollment_id)).all()
    steps = []
    for d in deliveries:
        mine = [e for e in events if e.delivery_id == d.id]
        human = [e for e in mine if not e.machine]
        clicks = [e for e in human if e.type == EventType.CLICK]
        steps.append(
            StepEngagement(
                step_id=d.step_id,
                step_order=d.step_order,
                decision=d.decision,
                condition_met=d.condition_met,
                decided_at=d.decided_at,
                delivery_id=d.id,
                delivery_status=d.status,
                sent_at=d.sent_at,
                opened=any(e.type in (EventType.OPEN, EventType.CLICK) for e in human),
                clicked=bool(clicks),
                clicked_urls=sorted({e.url for e in clicks if e.url}),
                machine_opens=sum(1 for e in mine if e.machine and e.type == EventType.OPEN),
                machine_clicks=sum(1 for e in mine if e.machine and e.type == EventType.CLICK),
            )
        )
    return steps


@router.get(
    "/{email:path}",
    operation_id="getJourney",
    summary="Read one recipient's journey, live",
    responses=problems(404),
    response_model=JourneyPublic,
)
async def get_journey(
    campaign_id: int, email: str, session: SessionDep, journeys: JourneysDep
) -> JourneyPublic:
    """One journey, live from its workflow while it runs, from the database after."""
    enrollment = await run_in_threadpool(_load_enrollment, session, campaign_id, email)
    live = (
        await journeys.progress(enrollment.workflow_id) if enrollment.finished_at is None else None
    )
    steps = await run_in_threadpool(_steps_with_engagement, session, enrollment.id or 0)
    next_due = (
        datetime.fromisoformat(live.next_step_due_at) if live and live.next_step_due_at else None
    )
    return JourneyPublic(
        email=enrollment.email,
        campaign_id=campaign_id,
        workflow_id=enrollment.workflow_id,
        status=live.status if live else enrollment.status,
        status_reason=(live.exit_reason if live else None) or enrollment.status_reason,
        current_step=live.current_step if live else enrollment.current_step,
        next_step_due_at=next_due,
        paused=live.paused if live else False,
        live=live is not None,
        fields=enrollment.fields,
        enrolled_at=enrollment.created_at,
        finished_at=enrollment.finished_at,
        steps=steps,
    )


@router.delete(
    "/{email:path}",
    operation_id="removeRecipient",
    summary="End one recipient's journey",
    responses=problems(404),
    status_code=202,
    response_model=EnrollmentPublic,
)
async def remove_recipient(
    campaign_id: int, email: str, session: SessionDep, journeys: JourneysDep
) -> EnrollmentPublic:
    """End this journey now (reason `removed`). Already finished: answered as it stands."""
    enrollment = await run_in_threadpool(_load_enrollment, session, campaign_id, email)
    if enrollment.status == JourneyStatus.ACTIVE:
        enrollment.status = JourneyStatus.REMOVED
        enrollment.status_reason = "removed by API"
        session.add(enrollment)
        await run_in_threadpool(session.commit)
        await journeys.remove(enrollment.workflow_id, "removed by API")
    return _enrollment_public(enrollment)
