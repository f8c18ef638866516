"""Engagement events posted directly (`POST /api/events`) and the stored-event log."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query
from sqlmodel import col, select
from starlette.concurrency import run_in_threadpool

from api.deps import EventsDep, SessionDep
from api.errors import not_found, problems
from api.idempotency import Idempotent
from api.schemas import EventAccepted, EventIn, EventPublic
from domain.events import IncomingEvent
from storage.models import Delivery, Event

router = APIRouter(prefix="/api/events", tags=["events"])


@router.post(
    "",
    operation_id="createEvent",
    summary="Record an engagement event for a delivery",
    responses=problems(404, 409),
    status_code=202,
    response_model=EventAccepted,
    dependencies=[Idempotent],
)
async def post_event(
    body: EventIn,
    session: SessionDep,
    events: EventsDep,
) -> EventAccepted:
    """Record one event for a delivery and signal its journey. Idempotent by `event_id`."""
    delivery = await run_in_threadpool(session.get, Delivery, body.delivery_id)
    if delivery is None:
        raise not_found("delivery", body.delivery_id)
    event = IncomingEvent(
        provider="api",
        dedupe_key=body.event_id or str(uuid.uuid4()),
        type=body.type.value,
        raw_type=body.type.value,
        delivery_id=body.delivery_id,
        url=body.url,
        occurred_at=body.occurred_at,
        raw=body.model_dump(mode="json"),
    )
    [stored] = await run_in_threadpool(events.store, [event])
    if not stored.duplicate:
        await events.signal([stored.id])
    return EventAccepted(id=stored.id, duplicate=stored.duplicate)


@router.get(
    "",
    operation_id="listEvents",
    summary="List stored engagement events",
    response_model=list[EventPublic],
)
def list_events(
    session: SessionDep,
    delivery_id: str | None = None,
    email: str | None = None,
    campaign_id: int | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> list[Event]:
    """Stored events, newest first, so an operator can see what arrived and from where."""
    query = select(Event)
    if delivery_id is not None:
        query = query.where(Event.delivery_id == delivery_id)
    if email is not None:
        query = query.where(Event.email == email.strip().lower())
    if campaign_id is not None:
        query = query.where(Event.campaign_id == campaign_id)
    return list(session.exec(query.order_by(col(Event.id).desc()).limit(limit).offset(offset)))
