"""A rehearsal of one imaginary recipient's journey (POST /api/campaigns/{id}/simulate): what
crosses into the simulation's driver workflow (workflows/simulation.py) and out of it.

Stdlib only (the workflow sandbox passes it through)."""

from dataclasses import dataclass, field
from typing import Any

from domain.journey import RecipientInput

# A simulated event's `type` for a tracked product event; the others are engagement types.
TRACK = "track"


@dataclass
class SimulatedEvent:
    """An event injected into the journey at `at` (ISO 8601): engagement (`type` an EventType,
    on the step `step_id`) or, with `type` "track", the product event `event`."""

    event_id: str
    at: str
    type: str
    step_id: int | None = None
    url: str | None = None
    event: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class SimulationInput:
    """The journey to run, child of the driver, started at `start_at` (ISO 8601; None: the
    test server's now), and the events to signal it at their times."""

    journey: RecipientInput
    journey_id: str
    start_at: str | None = None
    events: list[SimulatedEvent] = field(default_factory=list)


@dataclass
class SimulationResult:
    status: str  # how the journey ended (JourneyStatus)
    started_at: str
    ended_at: str
