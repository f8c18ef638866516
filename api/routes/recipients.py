"""Enrollment and one recipient's journey."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.deps import EngineDep, JourneysDep, SessionDep, SettingsDep, load_or_404
from api.errors import problems
from api.idempotency import Idempotent
from api.schemas import (
    BatchAccepted,
    ConversionPublic,
    EnrollmentPage,
    EnrollmentPublic,
    EnrollRequest,
    EnrollResult,
    EvidencePublic,
    JourneyPublic,
    Rejected,
    StepEngagement,
    WaitingForPublic,
    batch_accepted,
    enrollment_public,
)
from domain.journey import Decision, JourneyStatus
from services import enrollment as enrolling
from services import journey_view
from services.enrollment_batches import accept, json_rows
from services.journey_view import StepView
from storage.models import Conversion

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
    once, ever, unless the campaign allows re-entry; invalid or suppressed addresses are
    rejected with a reason, the rest enrolled.
    Up to DRIP_SYNC_ENROLL_LIMIT (1,000) recipients are enrolled before the answer (200); a
    larger call is stored and answered at once (202 with a batch id, see
    `GET /api/enrollment-batches/{id}`), and a batch job enrolls them."""
    campaign = await run_in_threadpool(load_or_404, session, campaign_id)
    enrolling.require_active(campaign)
    candidates = [enrolling.Candidate(r.email, r.fields) for r in body.recipients]
    if len(candidates) > settings.sync_enroll_limit:
        batch = await accept(engine, journeys, campaign_id, "api", json_rows(candidates))
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
    current_step: int | None = Query(
        None, ge=0, description="only journeys at this step (the step_order last decided)"
    ),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> EnrollmentPage:
    """The campaign's enrollments in order, optionally only those in one `status` and at one
    step: `?current_step=2&status=active` lists who is waiting after step 2."""
    rows, total = journey_view.page(session, campaign_id, status, current_step, limit, offset)
    return EnrollmentPage(
        items=[enrollment_public(e) for e in rows], total=total, limit=limit, offset=offset
    )


def _step_public(step: StepView) -> StepEngagement:
    d = step.delivery
    return StepEngagement(
        step_id=d.step_id,
        step_order=d.step_order,
        decision=Decision(d.decision),
        condition_met=d.condition_met,
        decided_at=d.decided_at,
        reason=step.reason,
        evidence=[EvidencePublic(**asdict(e)) for e in step.evidence],
        delivery_id=d.id,
        delivery_status=d.status,
        variant=d.variant,
        sent_at=d.sent_at,
        opened=step.opened,
        clicked=step.clicked,
        clicked_urls=step.clicked_urls,
        machine_opens=step.machine_opens,
        machine_clicks=step.machine_clicks,
    )


def _conversion_public(c: Conversion | None) -> ConversionPublic | None:
    if c is None:
        return None
    return ConversionPublic(
        event_id=c.event_id,
        step_id=c.step_id or None,
        step_order=c.step_order or None,
        occurred_at=c.occurred_at,
    )


Entry = Query(None, ge=1, description="an earlier entry into the campaign (default: the latest)")


@router.get(
    "/{email:path}",
    operation_id="getJourney",
    summary="Read one recipient's journey, live",
    responses=problems(404),
    response_model=JourneyPublic,
)
async def get_journey(
    campaign_id: int,
    email: str,
    session: SessionDep,
    journeys: JourneysDep,
    entry: int | None = Entry,
) -> JourneyPublic:
    """One journey (the latest entry, or `?entry=n`), live from its workflow while it runs,
    from the database after. Each decided step says why (`reason`, `evidence`); once the
    journey has finished its reasons are rebuilt from the database and say so. `waiting_for`
    is what it waits for before its next step (null when nothing is pending)."""
    view = await journey_view.read(session, journeys, campaign_id, email, entry)
    enrollment, live = view.enrollment, view.live
    next_due = (
        datetime.fromisoformat(live.next_step_due_at) if live and live.next_step_due_at else None
    )
    waiting = view.waiting_for
    return JourneyPublic(
        email=enrollment.email,
        campaign_id=campaign_id,
        workflow_id=enrollment.workflow_id,
        entry=enrollment.entry,
        version=view.version,
        campaign_version=view.campaign_version,
        status=JourneyStatus(live.status if live else enrollment.status),
        status_reason=(live.exit_reason if live else None) or enrollment.status_reason,
        current_step=live.current_step if live else enrollment.current_step,
        next_step_due_at=next_due,
        waiting_for=WaitingForPublic(
            kind=waiting.kind,
            until=waiting.until,
            reason=waiting.reason,
            condition=waiting.condition,
            zone=waiting.zone,
        )
        if waiting
        else None,
        paused=live.paused if live else False,
        live=live is not None,
        fields=enrollment.fields,
        enrolled_at=enrollment.created_at,
        finished_at=enrollment.finished_at,
        steps=[_step_public(s) for s in view.steps],
        conversion=_conversion_public(view.conversion),
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
    campaign_id: int,
    email: str,
    session: SessionDep,
    journeys: JourneysDep,
    entry: int | None = Entry,
) -> EnrollmentPublic:
    """End this journey now (reason `removed`): the latest entry, or `?entry=n`. Already
    finished: answered as it stands."""
    enrollment = await run_in_threadpool(
        journey_view.load_enrollment, session, campaign_id, email, entry
    )
    if enrollment.status == JourneyStatus.ACTIVE:
        enrollment.status = JourneyStatus.REMOVED
        enrollment.status_reason = "removed by API"
        session.add(enrollment)
        await run_in_threadpool(session.commit)
        await journeys.remove(enrollment.workflow_id, "removed by API")
    return enrollment_public(enrollment)
