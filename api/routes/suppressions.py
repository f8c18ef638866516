"""The suppression list: addresses nothing is ever sent to (unsubscribed, hard-bounced,
complained, or added by an operator). The send activity checks it before every send."""

from __future__ import annotations

import asyncio

from email_validator import EmailNotValidError
from fastapi import APIRouter, Query, Response
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from api.deps import EngineDep, JourneysDep, SessionDep
from api.errors import invalid, not_found
from api.schemas import SuppressionCreate, SuppressionPage, SuppressionPublic
from domain.journey import SUPPRESSION_EXIT, TERMINAL_EVENTS, EngagementSignal, JourneyStatus
from mail.addresses import normalise_email, stored_form
from storage.db import session_scope
from storage.inserts import insert_ignoring_conflicts
from storage.models import Enrollment, Suppression, utcnow
from storage.suppression import find_suppression, stored_forms

router = APIRouter(prefix="/api/suppressions", tags=["suppressions"])

MANUAL = "manual"


def _public(row: Suppression) -> SuppressionPublic:
    return SuppressionPublic(
        email=row.email, reason=row.reason, source=row.source, created_at=row.created_at
    )


@router.get("", response_model=SuppressionPage)
def list_suppressions(
    session: SessionDep,
    email: str | None = None,
    reason: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> SuppressionPage:
    """Suppressed addresses, newest first; `email` and `reason` filter exactly. An erased
    person's entry is kept (and listed) only as `hmac-sha256:<hash>`; `email` finds it too."""
    where: list[ColumnElement[bool]] = []
    if email is not None:
        address = stored_form(email)
        where.append(col(Suppression.email).in_(stored_forms(address)))
    if reason is not None:
        where.append(col(Suppression.reason) == reason)
    total = session.exec(select(func.count()).select_from(Suppression).where(*where)).one()
    rows = session.exec(
        select(Suppression)
        .where(*where)
        .order_by(col(Suppression.created_at).desc(), col(Suppression.email))
        .limit(limit)
        .offset(offset)
    ).all()
    return SuppressionPage(
        items=[_public(r) for r in rows], total=total, limit=limit, offset=offset
    )


def _suppress(engine: Engine, email: str, reason: str) -> tuple[Suppression, bool, list[str]]:
    """Write the suppression (an existing one is kept as it is) and end the address's active
    enrollments in the database, so no step of them is sent even before the signal lands."""
    with session_scope(engine) as session:
        created: list[str] = []
        row = find_suppression(session, email)  # plain, or hashed after an erasure
        if row is None:
            created = insert_ignoring_conflicts(
                session,
                Suppression,
                [dict(email=email, reason=reason, source="api", created_at=utcnow())],
                returning="email",
            )
            row = session.get(Suppression, email)  # ours, or a concurrent request's
        assert row is not None
        ended = _end_active_enrollments(session, email, row)
        return row, bool(created), ended


def _end_active_enrollments(session: Session, email: str, row: Suppression) -> list[str]:
    active = session.exec(
        select(Enrollment).where(
            Enrollment.email == email, Enrollment.status == JourneyStatus.ACTIVE
        )
    ).all()
    for enrollment in active:
        # The journey records its own end later; a status set here wins (finish_journey).
        enrollment.status = SUPPRESSION_EXIT.get(row.reason, JourneyStatus.SUPPRESSED)
        enrollment.status_reason = f"suppressed: {row.reason}"
        session.add(enrollment)
    return [e.workflow_id for e in active]


@router.post("", response_model=SuppressionPublic, status_code=201)
async def suppress(
    body: SuppressionCreate, response: Response, engine: EngineDep, journeys: JourneysDep
) -> SuppressionPublic:
    """Suppress an address (201; 200 with the existing entry when it is already suppressed) and
    end every running journey of it, in every campaign."""
    try:
        email = normalise_email(body.email)
    except EmailNotValidError as exc:
        raise invalid(["body", "email"], f"invalid email: {exc}") from exc
    row, created, workflow_ids = await run_in_threadpool(
        _suppress, engine, email, body.reason or MANUAL
    )
    if not created:
        response.status_code = 200
    reason = f"suppressed: {row.reason}"
    if row.reason in TERMINAL_EVENTS:
        # Tell the journey what happened, so it ends with the matching status.
        event_id = f"suppression:{email}:{row.created_at.isoformat()}"
        await journeys.signal_events(
            [(w, EngagementSignal(event_id=event_id, type=row.reason)) for w in workflow_ids]
        )
    else:
        await asyncio.gather(*(journeys.remove(w, reason) for w in workflow_ids))
    return _public(row)


@router.delete("/{email}", status_code=204)
def unsuppress(email: str, session: SessionDep) -> Response:
    """Lift a suppression: sends to the address resume for journeys still running and new
    enrollments; journeys it already ended stay ended."""
    address = stored_form(email)
    rows = [r for r in (session.get(Suppression, k) for k in stored_forms(address)) if r]
    if not rows:
        raise not_found("suppression", email)
    for row in rows:
        session.delete(row)
    session.commit()
    return Response(status_code=204)
