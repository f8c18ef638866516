"""When a step may go out: its date or its window's next opening, from the recipient's fields
as the database holds them now (so a changed `timezone` counts from the next step), and the
frequency cap's slot. Local activities of the journey: each answer is kept in the history, so
a replay never recomputes it."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from temporalio import activity

from domain.journey import (
    ActivityName,
    CapAnswer,
    CapRequest,
    SendTimeAnswer,
    SendTimeQuery,
    SendWindowPlan,
)
from domain.timing import (
    RECIPIENT_ZONE,
    TIMEZONE_FIELD,
    Window,
    choose_zone,
    due_from_field,
    send_time,
    zone_or_none,
)
from services import frequency
from storage.db import session_scope
from storage.models import Enrollment


class TimingActivities:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @activity.defn(name=ActivityName.SEND_TIME)
    def compute_send_time(self, query: SendTimeQuery) -> SendTimeAnswer:
        with session_scope(self.engine) as session:
            enrollment = session.get(Enrollment, query.enrollment_id)
            fields = dict(enrollment.fields) if enrollment is not None else {}
        return answer_send_time(query, fields)

    @activity.defn(name=ActivityName.RESERVE_CAP_SLOT)
    def reserve_cap_slot(self, request: CapRequest) -> CapAnswer:
        reservation = frequency.reserve(
            self.engine,
            email=request.email,
            enrollment_id=request.enrollment_id,
            step_id=request.step_id,
            campaign_id=request.campaign_id,
            at=datetime.fromisoformat(request.at),
            on_cap=request.on_cap,
        )
        frees = reservation.next_free_at.isoformat() if reservation.next_free_at else None
        return CapAnswer(reservation.granted, reservation.reason, frees)


def answer_send_time(query: SendTimeQuery, fields: dict[str, object]) -> SendTimeAnswer:
    """The answer to `query` for a recipient with these fields (domain/timing.py's rules)."""
    at = datetime.fromisoformat(query.at)
    if query.delay_until is not None:
        zone = reading_zone(fields, query.window)
        due = due_from_field(
            query.delay_until.field,
            fields.get(query.delay_until.field),
            query.delay_until.offset_hours,
            ZoneInfo(zone),
            at,
        )
        return SendTimeAnswer(due.at.isoformat() if due.at else None, due.reason, zone)
    if query.window is None:
        return SendTimeAnswer(query.at, "no send window")
    window = query.window
    chosen = choose_zone(window.timezone, window.fallback_timezone, fields)
    result = send_time(at, Window(window.days, window.start, window.end), chosen)
    assert result.at is not None
    return SendTimeAnswer(result.at.isoformat(), result.reason, chosen.name)


def reading_zone(fields: dict[str, object], window: SendWindowPlan | None) -> str:
    """The zone a naive date or date-time in a recipient field is read in: the recipient's
    `timezone` field, else the step's window zone (or its fallback), else UTC."""
    own = fields.get(TIMEZONE_FIELD)
    if zone_or_none(own) is not None:
        return str(own)
    if window is not None and window.timezone != RECIPIENT_ZONE:
        return window.timezone
    if window is not None and window.fallback_timezone:
        return window.fallback_timezone
    return "UTC"
