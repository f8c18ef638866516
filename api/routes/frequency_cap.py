"""The frequency cap across campaigns, as a setting (services/frequency.py)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import SessionDep
from api.errors import problems
from api.schemas import FrequencyCapIn, FrequencyCapPublic
from services import frequency
from storage.models import FrequencyCap

router = APIRouter(prefix="/api/settings", tags=["settings"])


def _public(cap: FrequencyCap) -> FrequencyCapPublic:
    return FrequencyCapPublic(
        max_messages=cap.max_messages, per_hours=cap.per_hours, updated_at=cap.updated_at
    )


@router.put(
    "/frequency-cap",
    operation_id="setFrequencyCap",
    summary="Set the frequency cap across campaigns",
    response_model=FrequencyCapPublic,
)
def set_frequency_cap(body: FrequencyCapIn, session: SessionDep) -> FrequencyCapPublic:
    """At most `max_messages` to one address in any `per_hours` (a rolling window counted from
    each message's send, to the second), across every campaign that does not say
    `frequency_cap: exempt`. Test sends never count."""
    return _public(frequency.set_cap(session, body.max_messages, body.per_hours))


@router.get(
    "/frequency-cap",
    operation_id="getFrequencyCap",
    summary="Read the frequency cap",
    responses=problems(404),
    response_model=FrequencyCapPublic,
)
def get_frequency_cap(session: SessionDep) -> FrequencyCapPublic:
    return _public(frequency.the_cap(session))


@router.delete(
    "/frequency-cap",
    operation_id="deleteFrequencyCap",
    summary="Remove the frequency cap",
    responses=problems(404),
    status_code=204,
)
def delete_frequency_cap(session: SessionDep) -> Response:
    frequency.clear_cap(session)
    return Response(status_code=204)
