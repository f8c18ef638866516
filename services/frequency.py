"""The frequency cap: at most `max_messages` to one address in any `per_hours`, across all
campaigns (docs/features.md#frequency-caps).

`reserve()` is the one way a journey's message takes part: in one transaction it checks the
address's messages in the rolling window and, if there is room, counts this one — or answers
when the next slot frees. The transaction first upserts the address's `cap_address` row, so
that row's lock (PostgreSQL) or the database's write lock (SQLite, taken by that first write)
is held until the commit: two reservations for one address, in any processes, run one after the
other, and two journeys due at the same moment can never both take the last slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, bindparam, delete, update
from sqlalchemy.orm import Session
from sqlmodel import col, select

from mail.addresses import stored_form
from services.errors import NotFound
from storage import counters
from storage.counters import Metric
from storage.db import session_scope
from storage.inserts import dialect_insert, insert_ignoring_conflicts
from storage.models import CapAddress, CapHold, CapSlot, FrequencyCap, utcnow

# Counted messages are kept this long (or the cap's window, if longer), so a cap changed to a
# longer window still counts the messages sent under the shorter one.
KEEP = timedelta(days=31)


class NoCap(NotFound):
    def __init__(self) -> None:
        Exception.__init__(self, "no frequency cap is set")


def read_cap(session: Session) -> FrequencyCap | None:
    return session.get(FrequencyCap, 1)


def the_cap(session: Session) -> FrequencyCap:
    cap = read_cap(session)
    if cap is None:
        raise NoCap()
    return cap


def set_cap(session: Session, max_messages: int, per_hours: float) -> FrequencyCap:
    cap = read_cap(session) or FrequencyCap(max_messages=max_messages, per_hours=per_hours)
    cap.max_messages, cap.per_hours, cap.updated_at = max_messages, per_hours, utcnow()
    session.add(cap)
    session.commit()
    session.refresh(cap)
    return cap


def clear_cap(session: Session) -> None:
    """Remove the cap (NoCap when there is none)."""
    session.delete(the_cap(session))
    session.commit()


@dataclass(frozen=True)
class Reservation:
    """The cap's answer: `granted` (the message may go now, and is counted), or not, with when
    the next slot frees (`next_free_at`) and what the step does (`on_cap`: defer | skip)."""

    granted: bool
    reason: str
    next_free_at: datetime | None = None


def reserve(
    engine: Engine,
    *,
    email: str,
    enrollment_id: int,
    step_id: int,
    campaign_id: int,
    at: datetime,
    exempt: bool = False,
    on_cap: str = "defer",
) -> Reservation:
    """Check and reserve, atomically, a slot for a message to `email` sent at `at`; a retry
    for the same (enrollment, step) finds its slot taken and is granted again. An `exempt`
    campaign's message is never blocked nor counted. A refusal records the step held by the
    cap (deferred or skipped, as `on_cap` says) once, for the funnel."""
    if exempt:
        return Reservation(True, "the campaign is exempt from the frequency cap")
    with Session(engine) as session:  # no cap (the usual case): a read, no write, no lock
        if read_cap(session) is None:
            return Reservation(True, "no frequency cap set")
    address = stored_form(email)  # as erasure finds it
    at = at.astimezone(UTC)  # SQLite compares the stored text: every instant in UTC
    with session_scope(engine) as session:
        _lock_address(session, address, at)  # first: every statement after it runs locked
        taken = session.exec(
            select(CapSlot.id).where(
                CapSlot.enrollment_id == enrollment_id, CapSlot.step_id == step_id
            )
        ).first()
        if taken is not None:
            return Reservation(True, "this step's slot was already reserved")
        cap = read_cap(session)
        keep = KEEP
        if cap is not None:
            window = timedelta(hours=cap.per_hours)
            keep = max(KEEP, window)
            sent = list(
                session.exec(
                    select(CapSlot.reserved_at)
                    .where(CapSlot.email == address, col(CapSlot.reserved_at) > at - window)
                    .order_by(col(CapSlot.reserved_at))
                )
            )
            refused = over_cap(sent, cap.max_messages, cap.per_hours)
            if refused is not None:
                _record_hold(session, enrollment_id, step_id, campaign_id, on_cap)
                return refused
        session.add(
            CapSlot(
                email=address,
                enrollment_id=enrollment_id,
                step_id=step_id,
                campaign_id=campaign_id,
                reserved_at=at,
            )
        )
        session.execute(
            delete(CapSlot).where(
                col(CapSlot.email) == address, col(CapSlot.reserved_at) <= at - keep
            )
        )
        return Reservation(True, "within the frequency cap" if cap else "no frequency cap set")


def release(engine: Engine, enrollment_id: int, step_id: int) -> None:
    """Give back a step's reserved slot when its message will never go: the journey switched
    to a version (migrate) before sending it."""
    with session_scope(engine) as session:
        session.execute(
            delete(CapSlot).where(
                col(CapSlot.enrollment_id) == enrollment_id, col(CapSlot.step_id) == step_id
            )
        )


def over_cap(sent: Sequence[datetime], max_messages: int, per_hours: float) -> Reservation | None:
    """The refusal when the address's messages in the window before this one (`sent`, oldest
    first) already fill the cap; None: there is room (a simulation applies the same rule)."""
    if len(sent) < max_messages:
        return None
    frees = _aware(sent[len(sent) - max_messages]) + timedelta(hours=per_hours)
    reason = (
        f"{len(sent)} of {max_messages} messages in {per_hours:g} h already sent to this address"
    )
    return Reservation(False, reason, frees)


# Built once: it runs in every `sent` record.
_COUNT_FROM_SEND = (
    update(CapSlot.__table__)  # type: ignore[attr-defined]
    .where(
        CapSlot.__table__.c.enrollment_id == bindparam("slot_enrollment"),  # type: ignore[attr-defined]
        CapSlot.__table__.c.step_id == bindparam("slot_step"),  # type: ignore[attr-defined]
    )
    .values(reserved_at=bindparam("sent_at_utc"))
)


def count_from_send(session: Session, enrollment_id: int, step_id: int, sent_at: datetime) -> None:
    """The step's counted message (if the cap counts it) dates from its actual send, in the
    transaction that records it sent: the slot then frees `per_hours` after the send itself,
    not after the reservation just before it."""
    at = _aware(sent_at).astimezone(UTC)
    slot = {"slot_enrollment": enrollment_id, "slot_step": step_id, "sent_at_utc": at}
    session.execute(_COUNT_FROM_SEND, slot)


def _lock_address(session: Session, address: str, at: datetime) -> None:
    insert = dialect_insert(session.get_bind().dialect.name)
    statement = insert(CapAddress.__table__).values(email=address, reserved_at=at)  # type: ignore[attr-defined]
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["email"], set_={"reserved_at": statement.excluded.reserved_at}
        )
    )


def _record_hold(
    session: Session, enrollment_id: int, step_id: int, campaign_id: int, on_cap: str
) -> None:
    outcome = "skipped" if on_cap == "skip" else "deferred"
    row = {
        "enrollment_id": enrollment_id,
        "step_id": step_id,
        "campaign_id": campaign_id,
        "outcome": outcome,
        "held_at": utcnow(),
    }
    if insert_ignoring_conflicts(session, CapHold, [row], returning="step_id"):
        metric = Metric.SKIPPED_BY_CAP if outcome == "skipped" else Metric.DEFERRED_BY_CAP
        counters.bump(session, campaign_id, step_id, metric)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns: they were stored in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
