"""Tracked product events (`POST /api/track`, `/api/track/batch`), a person's event log, and
new field values for a person's running journeys. The logic is services/tracking.py."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from api import pagination
from api.deps import TrackingDep
from api.errors import problems
from api.idempotency import Idempotent
from api.schemas import (
    RecipientFieldsUpdate,
    RecipientFieldsUpdated,
    TrackAccepted,
    TrackBatchAccepted,
    TrackBatchIn,
    TrackedEventPage,
    TrackedEventPublic,
    TrackIn,
)
from services.errors import Invalid
from services.tracking import Rejection, TrackRequest
from storage.models import TrackedEvent
from storage.tracked_events import as_utc

router = APIRouter(tags=["tracked events"])
Email = Annotated[str, Path(min_length=1, max_length=320)]
_ITEM = TypeAdapter(TrackIn)


def _request(body: TrackIn) -> TrackRequest:
    return TrackRequest(
        email=body.email,
        event=body.event,
        properties=body.properties,
        fields=dict(body.fields),
        event_id=body.event_id,
        occurred_at=body.occurred_at,
    )


@router.post(
    "/api/track",
    operation_id="trackEvent",
    summary="Record something a person did in the product",
    status_code=202,
    response_model=TrackAccepted,
    responses=problems(409),
    dependencies=[Idempotent],
)
async def track(body: TrackIn, tracking: TrackingDep) -> TrackAccepted:
    """Store the event (once per `event_id`: a retry answers `duplicate: true` and does nothing
    else), record the goal conversions it makes, enroll the person into every active campaign
    whose trigger it matches (not a suppressed address: `not_enrolled` says why), and signal the
    running journeys whose conditions or goal name it."""
    answer = await tracking.track(_request(body))
    return TrackAccepted.model_validate(asdict(answer))


@router.post(
    "/api/track/batch",
    operation_id="trackEvents",
    summary="Record up to 1,000 product events",
    status_code=202,
    response_model=TrackBatchAccepted,
    responses=problems(409),
    dependencies=[Idempotent],
)
async def track_batch(body: TrackBatchIn, tracking: TrackingDep) -> TrackBatchAccepted:
    """Each event as `POST /api/track` records it; a wrong one is rejected with its index and
    the reason, the others are recorded."""
    items: list[TrackRequest | Rejection] = []
    for index, item in enumerate(body.events):
        try:
            items.append(_request(_ITEM.validate_python(item)))
        except ValidationError as exc:
            items.append(Rejection(index, _reason(exc)))
    answer = await tracking.track_batch(items)
    return TrackBatchAccepted.model_validate(asdict(answer))


def _reason(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in exc.errors())


@router.get(
    "/api/recipients/{email:path}/events",
    operation_id="listTrackedEvents",
    summary="List a person's tracked events, newest first",
    response_model=TrackedEventPage,
    responses=problems(422),
)
async def list_tracked_events(
    email: Email,
    tracking: TrackingDep,
    limit: pagination.LimitQuery = 100,
    cursor: pagination.CursorQuery = None,
) -> TrackedEventPage:
    """A person's tracked events, newest first (by `occurred_at`), a cursor page."""
    key = pagination.decode(cursor, 2)
    try:
        before = (as_utc(datetime.fromisoformat(str(key[0]))), int(key[1])) if key else None
    except ValueError as exc:
        raise Invalid(["query", "cursor"], "not a cursor of this list") from exc
    rows = await run_in_threadpool(tracking.events_of, email, before, limit + 1)
    page = pagination.page(rows, limit, _key, _public)
    return TrackedEventPage(items=page.items, next_cursor=page.next_cursor)


def _key(row: TrackedEvent) -> tuple[str, int]:
    return (row.occurred_at.isoformat(), row.id or 0)


def _public(row: TrackedEvent) -> TrackedEventPublic:
    return TrackedEventPublic(
        event_id=row.event_id,
        event=row.name,
        properties=row.properties,
        occurred_at=row.occurred_at,
        received_at=row.received_at,
    )


@router.patch(
    "/api/recipients/{email:path}",
    operation_id="updateRecipientFields",
    summary="Merge new field values into a person's running journeys",
    response_model=RecipientFieldsUpdated,
)
async def update_fields(
    email: Email, body: RecipientFieldsUpdate, tracking: TrackingDep
) -> RecipientFieldsUpdated:
    """Merge these field values (a changed `timezone`, a new `trial_ends_at`) into every
    running journey of the person: each uses them from its next step on."""
    merged = await run_in_threadpool(tracking.merge_fields, email, dict(body.fields))
    return RecipientFieldsUpdated(email=merged.email, journeys_updated=merged.journeys_updated)
