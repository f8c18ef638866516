"""When a step may go out: its date or its window's next opening, from the recipient's fields
as the database holds them now (so a changed `timezone` counts from the next step), and the
frequency cap's slot. Local activities of the journey: each answer is kept in the history, so
a replay never recomputes it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine
from temporalio import activity

from domain.journey import ActivityName, CapAnswer, CapRequest, SendTimeAnswer, SendTimeQuery
from domain.timing import answer_send_time
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
