"""A campaign's per-step funnel, from the running counters (storage/counters.py): one indexed
read of a few dozen rows, whatever the campaign's size. Never from the workflows."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CampaignDep, SessionDep
from api.errors import problems
from api.routes.campaigns import winner_public
from api.schemas import CampaignFunnel, FunnelStep, FunnelVariant
from services.campaigns import steps_of
from services.variants import figures, tests_of, variants_of
from storage import counters
from storage.counters import CAMPAIGN, Metric

router = APIRouter(prefix="/api/campaigns", tags=["stats"])


@router.get(
    "/{campaign_id}/funnel",
    operation_id="getCampaignFunnel",
    summary="Read a campaign's step-by-step funnel",
    responses=problems(404),
    response_model=CampaignFunnel,
)
def campaign_funnel(campaign: CampaignDep, session: SessionDep) -> CampaignFunnel:
    """Per step, in order: journeys that `reached` it and what was decided (`sent`,
    `alternative_sent`, `skipped`), then deliveries of it that were `delivered`, `opened`,
    `clicked`, `bounced`, `unsubscribed` or `complained` — each delivery counted once however
    often it happened — and the conversions attributed to it (`converted`: the last message sent
    before the goal event). An A/B-tested step lists its `variants`, each with its own figures
    and rates, and its `winner` rule with the variant chosen and when, once it is.
    `opened` and `clicked` count people (a click counts as an open);
    `*_including_machine` also count privacy proxies and link scanners. At the top: the
    campaign's `recipients` (entries), `completed` (converted journeys included), `converted`
    and `conversion_rate` (converted ÷ recipients, 3 decimals)."""
    campaign_id = campaign.id or 0
    counts = counters.read(session, campaign_id)

    def count(step_id: int, metric: Metric) -> int:
        return counts.get((step_id, metric), 0)

    tests = tests_of(session, campaign_id)
    recipients = count(CAMPAIGN, Metric.RECIPIENTS)
    converted = count(CAMPAIGN, Metric.CONVERTED)
    return CampaignFunnel(
        campaign_id=campaign_id,
        recipients=recipients,
        completed=count(CAMPAIGN, Metric.COMPLETED),
        converted=converted,
        conversion_rate=round(converted / recipients, 3) if recipients else 0,
        steps=[
            FunnelStep(
                step_id=step.id or 0,
                step_order=step.step_order,
                subject=step.subject,
                reached=count(step.id or 0, Metric.REACHED),
                sent=count(step.id or 0, Metric.SENT),
                alternative_sent=count(step.id or 0, Metric.ALTERNATIVE_SENT),
                skipped=count(step.id or 0, Metric.SKIPPED),
                delivered=count(step.id or 0, Metric.DELIVERED),
                opened=count(step.id or 0, Metric.OPENED),
                clicked=count(step.id or 0, Metric.CLICKED),
                bounced=count(step.id or 0, Metric.BOUNCED),
                unsubscribed=count(step.id or 0, Metric.UNSUBSCRIBED),
                complained=count(step.id or 0, Metric.COMPLAINED),
                opened_including_machine=count(step.id or 0, Metric.OPENED_ANY),
                clicked_including_machine=count(step.id or 0, Metric.CLICKED_ANY),
                uncertain=count(step.id or 0, Metric.UNCERTAIN),
                failed=count(step.id or 0, Metric.FAILED),
                deferred_by_cap=count(step.id or 0, Metric.DEFERRED_BY_CAP),
                skipped_by_cap=count(step.id or 0, Metric.SKIPPED_BY_CAP),
                converted=count(step.id or 0, Metric.CONVERTED),
                variants=[
                    FunnelVariant(
                        name=v.name, holdout=v.holdout, **figures(counts, step.id or 0, v.name)
                    )
                    for v in variants_of(step)
                ]
                or None,
                winner=winner_public(step, tests.get(step.id or 0)),
            )
            for step in steps_of(session, campaign_id)
        ],
    )
