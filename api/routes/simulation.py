"""Rehearse a campaign: its real journey workflow for one imaginary recipient on Temporal's
time-skipping server, nothing sent or stored (services/simulation.py)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.deps import SessionDep, SimulatorDep, load_or_404
from api.errors import problems
from api.schemas import SimulationOut, SimulationRequest, SimulationStepOut
from services import simulation

router = APIRouter(prefix="/api/campaigns", tags=["simulation"])


@router.post(
    "/{campaign_id}/simulate",
    operation_id="simulateCampaign",
    summary="Rehearse a campaign for one imaginary recipient",
    responses=problems(404, 422),
)
async def simulate_campaign(
    campaign_id: int, body: SimulationRequest, session: SessionDep, simulator: SimulatorDep
) -> SimulationOut:
    """Runs the campaign's real journey workflow (the live definition, or `version`, a draft
    one too) on Temporal's time-skipping test server, with the given engagement and tracked
    events injected at their times: delays, conditions, waits, send windows (in
    `fields.timezone`), goals and variants as a real journey has them. Sends nothing, stores no
    enrollment, touches no stats. Rehearsals run one at a time."""

    def prepare() -> simulation.Scenario:
        campaign = load_or_404(session, campaign_id)
        return simulation.scenario(
            session, campaign, email=body.email, fields=body.fields, start_at=body.start_at,
            version=body.version, events=[e.model_dump() for e in body.events],
        )  # fmt: skip

    rehearsal = await simulator.run(await run_in_threadpool(prepare))
    return SimulationOut(
        timeline=[
            SimulationStepOut(
                at=e.at,
                step_order=e.step_order,
                decision=e.decision,
                variant=e.variant,
                subject=e.subject,
                reason=e.reason,
            )  # fmt: skip
            for e in rehearsal.timeline
        ],
        status=rehearsal.status,
        ended_at=rehearsal.ended_at,
    )
