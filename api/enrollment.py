"""Enrollment: rows first (so counts read their own writes), then one journey per row."""

from __future__ import annotations

from datetime import datetime

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from api.journeys import JourneyStart
from api.schemas import EnrollResult, RecipientIn, Rejected
from domain.enrollment import RowState
from domain.journey import workflow_id
from mail.headers import field_problem
from observability.metrics import count_enrollments
from storage.counters import CAMPAIGN, Metric, bump
from storage.db import session_scope
from storage.models import Enrollment, EnrollmentBatchRow, utcnow
from storage.plans import plans_of, read_plan
from storage.suppression import suppressed_among
from storage.upsert import insert_ignoring_conflicts


def normalise_email(raw: str) -> str:
    """Lower-cased address, or EmailNotValidError with a readable reason."""
    checked = validate_email(raw.strip(), check_deliverability=False)
    return checked.normalized.lower()


def write_enrollments(
    engine: Engine, campaign_id: int, recipients: list[RecipientIn]
) -> tuple[EnrollResult, list[JourneyStart]]:
    rejected: list[Rejected] = []
    wanted: dict[str, RecipientIn] = {}
    for recipient in recipients:
        try:
            email = normalise_email(recipient.email)
        except EmailNotValidError as exc:
            rejected.append(Rejected(email=recipient.email, reason=f"invalid email: {exc}"))
            continue
        if problem := field_problem(recipient.fields):
            rejected.append(Rejected(email=recipient.email, reason=problem))
            continue
        wanted.setdefault(email, recipient)
    duplicates_in_request = len(recipients) - len(rejected) - len(wanted)
    with session_scope(engine) as session:
        if wanted:
            for email, s in suppressed_among(session, wanted).items():  # plain or hashed (erased)
                rejected.append(Rejected(email=email, reason=f"suppressed: {s.reason}"))
                del wanted[email]
        rows = [
            dict(
                campaign_id=campaign_id,
                email=email,
                fields=dict(r.fields),
                status="active",
                current_step=0,
                workflow_id=workflow_id(campaign_id, email),
                workflow_started=False,
                created_at=utcnow(),
            )
            for email, r in wanted.items()
        ]
        inserted = set(insert_ignoring_conflicts(session, Enrollment, rows))
        bump(session, campaign_id, CAMPAIGN, Metric.RECIPIENTS, len(inserted))
        plan = read_plan(session, campaign_id) if inserted else None
        starts = [
            JourneyStart(e.id or 0, campaign_id, e.email, e.workflow_id, plan)
            for e in session.exec(select(Enrollment).where(col(Enrollment.id).in_(inserted)))
        ]
    result = EnrollResult(
        enrolled=len(inserted),
        already_enrolled=len(wanted) - len(inserted) + duplicates_in_request,
        rejected=rejected,
    )
    count_enrollments(result.enrolled, result.already_enrolled, len(rejected))
    return result, starts


def mark_started(engine: Engine, enrollment_ids: list[int]) -> None:
    if not enrollment_ids:
        return
    with session_scope(engine) as session:
        for start in range(0, len(enrollment_ids), 1000):
            chunk = enrollment_ids[start : start + 1000]
            session.execute(
                update(Enrollment)
                .where(col(Enrollment.id).in_(chunk))
                .values(workflow_started=True)
            )


def _owned_by_a_batch():  # type: ignore[no-untyped-def]
    # A batch job starts its own rows, slice by slice: leave them to it.
    return (
        select(EnrollmentBatchRow.id)
        .where(
            EnrollmentBatchRow.enrollment_id == Enrollment.id,
            EnrollmentBatchRow.state == RowState.ENROLLED,
        )
        .exists()
    )


def unstarted(engine: Engine, created_before: datetime, limit: int = 1000) -> list[JourneyStart]:
    with session_scope(engine) as session:
        rows = session.exec(
            select(Enrollment)
            .where(
                col(Enrollment.workflow_started).is_(False),
                col(Enrollment.created_at) < created_before,
                ~_owned_by_a_batch(),
            )
            .order_by(col(Enrollment.id))
            .limit(limit)
        ).all()
        plans = plans_of(session, {e.campaign_id for e in rows})
        return [
            JourneyStart(e.id or 0, e.campaign_id, e.email, e.workflow_id, plans[e.campaign_id])
            for e in rows
        ]
