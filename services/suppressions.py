"""The suppression list: addresses nothing is ever sent to (unsubscribed, hard-bounced,
complained, or added by an operator). The send activity checks it before every send."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from email_validator import EmailNotValidError
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from domain.journey import SUPPRESSION_EXIT, TERMINAL_EVENTS, EngagementSignal, JourneyStatus
from mail.addresses import normalise_email, stored_form
from services.errors import Invalid, NotFound
from services.journeys import Journeys
from storage.db import session_scope
from storage.inserts import insert_ignoring_conflicts
from storage.models import Enrollment, Suppression, utcnow
from storage.suppression import find_suppression, stored_forms

MANUAL = "manual"


@dataclass
class Suppressed:
    row: Suppression
    created: bool  # False: the address was suppressed already (the entry is kept as it was)


def page(
    session: Session, email: str | None, reason: str | None, limit: int, offset: int
) -> tuple[list[Suppression], int]:
    """Newest first; `email` and `reason` filter exactly. An erased person's entry is kept only
    as `hmac-sha256:<hash>`; `email` finds it too."""
    where: list[ColumnElement[bool]] = []
    if email is not None:
        where.append(col(Suppression.email).in_(stored_forms(stored_form(email))))
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
    return list(rows), total


async def suppress(
    engine: Engine, journeys: Journeys, email: str, reason: str | None
) -> Suppressed:
    """Suppress an address and end every running journey of it, in every campaign."""
    try:
        address = normalise_email(email)
    except EmailNotValidError as exc:
        raise Invalid(["body", "email"], f"invalid email: {exc}") from exc
    row, created, workflow_ids = await asyncio.to_thread(_write, engine, address, reason or MANUAL)
    if row.reason in TERMINAL_EVENTS:
        # Tell the journey what happened, so it ends with the matching status.
        event_id = f"suppression:{address}:{row.created_at.isoformat()}"
        await journeys.signal_events(
            [(w, EngagementSignal(event_id=event_id, type=row.reason)) for w in workflow_ids]
        )
    else:
        await asyncio.gather(
            *(journeys.remove(w, f"suppressed: {row.reason}") for w in workflow_ids)
        )
    return Suppressed(row, created)


def lift(session: Session, email: str) -> None:
    """Sends to the address resume for journeys still running and new enrollments; journeys it
    already ended stay ended."""
    rows = [r for r in (session.get(Suppression, k) for k in stored_forms(stored_form(email))) if r]
    if not rows:
        raise NotFound("suppression", email)
    for row in rows:
        session.delete(row)
    session.commit()


def _write(engine: Engine, email: str, reason: str) -> tuple[Suppression, bool, list[str]]:
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
