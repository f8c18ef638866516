"""The driver of a simulation (services/simulation.py): on the time-skipping test server it
waits until the rehearsal's start, runs the real RecipientWorkflow as its child, and signals
the injected events to it at their times, as the API would have. Never on the production
worker."""

from __future__ import annotations

import asyncio
from datetime import datetime

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain import conditions
    from domain.journey import EngagementSignal, ProductEvent
    from domain.simulation import TRACK, SimulatedEvent, SimulationInput, SimulationResult

from workflows.recipient import RecipientWorkflow


@workflow.defn
class SimulationWorkflow:
    @workflow.run
    async def run(self, input: SimulationInput) -> SimulationResult:
        if input.start_at is not None:
            await self._sleep_until(conditions.parse_utc(input.start_at))
        started = workflow.now()
        input.journey.enrolled_at = started.isoformat()
        journey = await workflow.start_child_workflow(
            RecipientWorkflow.run, input.journey, id=input.journey_id
        )
        ended = asyncio.ensure_future(journey)
        for event in sorted(input.events, key=lambda e: conditions.parse_utc(e.at)):
            due = conditions.parse_utc(event.at)
            remaining = (due - workflow.now()).total_seconds()
            if remaining > 0:
                try:
                    await workflow.wait_condition(ended.done, timeout=remaining)
                except TimeoutError:
                    pass
            if ended.done():
                break  # the journey ended before this event: nobody hears it
            try:
                await self._signal(journey, event)
            except Exception:
                if not ended.done():
                    raise
                break  # it ended while the signal was on its way
        status = await ended
        return SimulationResult(status, started.isoformat(), workflow.now().isoformat())

    async def _sleep_until(self, at: datetime) -> None:
        remaining = (at - workflow.now()).total_seconds()
        if remaining > 0:
            await workflow.sleep(remaining)

    async def _signal(
        self, journey: workflow.ChildWorkflowHandle[RecipientWorkflow, str], event: SimulatedEvent
    ) -> None:
        if event.type == TRACK:
            tracked = ProductEvent(event.event_id, event.event or "", event.at, event.properties)
            await journey.signal(RecipientWorkflow.on_tracked, tracked)
        else:
            engagement = EngagementSignal(event.event_id, event.type, event.step_id, event.url)
            await journey.signal(RecipientWorkflow.on_event, engagement)
