"""Journey bookkeeping: load the plan, record skipped steps, record the end."""

from __future__ import annotations

import threading
from collections import OrderedDict

from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.guards import gate
from activities.ids import new_delivery_id
from domain.journey import (
    ActivityName,
    Decision,
    FinishInput,
    JourneyPlan,
    JourneyStatus,
    StepInput,
    StepOutcome,
    StepResult,
)
from domain.versions import VersionPlanQuery
from services import webhooks_out
from storage.counters import CAMPAIGN, COMPLETED_STATUSES, Metric, bump
from storage.db import session_scope
from storage.models import Delivery, Enrollment, utcnow
from storage.plans import read_plan, version_plan

# Campaigns whose plans this worker keeps. A plan never changes once its campaign has left
# draft, and journeys start only in active campaigns (api/routes/campaigns.py), so a kept plan
# cannot go stale: a 10,000-recipient enrollment reads it once, not 10,000 times.
PLAN_CACHE_CAMPAIGNS = 256


class BookkeepingActivities:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._plans: OrderedDict[int, JourneyPlan] = OrderedDict()
        self._version_plans: OrderedDict[tuple[int, int], JourneyPlan] = OrderedDict()
        self._plans_lock = threading.Lock()  # sync activities run on several threads

    @activity.defn(name=ActivityName.LOAD_PLAN)
    def load_plan(self, campaign_id: int) -> JourneyPlan:
        with self._plans_lock:
            if campaign_id in self._plans:
                self._plans.move_to_end(campaign_id)
                return self._plans[campaign_id]
        plan = self._read_plan(campaign_id)
        with self._plans_lock:
            self._plans[campaign_id] = plan
            if len(self._plans) > PLAN_CACHE_CAMPAIGNS:
                self._plans.popitem(last=False)
        return plan

    @activity.defn(name=ActivityName.LOAD_VERSION_PLAN)
    def load_version_plan(self, query: VersionPlanQuery) -> JourneyPlan:
        """The plan of the version a journey migrates to. A published version never changes
        (its snapshot is fixed), so it is kept: a publish to 100,000 journeys reads it once."""
        key = (query.campaign_id, query.version)
        with self._plans_lock:
            if key in self._version_plans:
                self._version_plans.move_to_end(key)
                return self._version_plans[key]
        with session_scope(self.engine) as session:
            plan = version_plan(session, query.campaign_id, query.version)
        if plan is None:
            raise ApplicationError(
                f"campaign {query.campaign_id} has no version {query.version}",
                non_retryable=True, type="NoSuchVersion",
            )  # fmt: skip
        with self._plans_lock:
            self._version_plans[key] = plan
            if len(self._version_plans) > PLAN_CACHE_CAMPAIGNS:
                self._version_plans.popitem(last=False)
        return plan

    def _read_plan(self, campaign_id: int) -> JourneyPlan:
        with session_scope(self.engine) as session:
            plan = read_plan(session, campaign_id)
        if plan is None:
            raise ApplicationError(
                f"campaign {campaign_id} has no steps", non_retryable=True, type="EmptyCampaign"
            )
        return plan

    @activity.defn(name=ActivityName.RECORD_SKIP)
    def record_skip(self, step: StepInput) -> StepResult:
        with session_scope(self.engine) as session:
            enrollment = session.get(Enrollment, step.enrollment_id)
            stop = gate(session, enrollment)
            if stop is not None:
                return stop
            assert enrollment is not None
            existing = session.exec(
                select(Delivery).where(
                    Delivery.enrollment_id == step.enrollment_id, Delivery.step_id == step.step_id
                )
            ).first()
            if existing is None:
                existing = Delivery(
                    id=new_delivery_id(),
                    enrollment_id=step.enrollment_id,
                    campaign_id=enrollment.campaign_id,
                    step_id=step.step_id,
                    step_order=step.step_order,
                    decision=Decision.SKIPPED,
                    condition_met=step.condition_met,
                    status="skipped",
                    skip_reason=step.reason,
                )
                session.add(existing)
                bump(session, enrollment.campaign_id, step.step_id, Metric.REACHED)
                bump(session, enrollment.campaign_id, step.step_id, Metric.SKIPPED)
                webhooks_out.step_decided(session, existing.id, existing.decision)  # events out
            enrollment.current_step = max(enrollment.current_step, step.step_order)
            session.add(enrollment)
            return StepResult(StepOutcome.DONE, delivery_id=existing.id)

    @activity.defn(name=ActivityName.FINISH_JOURNEY)
    def finish_journey(self, finish: FinishInput) -> None:
        with session_scope(self.engine) as session:
            enrollment = session.get(Enrollment, finish.enrollment_id, with_for_update=True)
            if enrollment is None or enrollment.finished_at is not None:
                return  # erased, or already recorded by an earlier attempt
            if enrollment.status == JourneyStatus.ACTIVE:  # an end recorded elsewhere wins
                enrollment.status = finish.status
                enrollment.status_reason = finish.reason
            if enrollment.status in COMPLETED_STATUSES:  # converted counts as completed
                bump(session, enrollment.campaign_id, CAMPAIGN, Metric.COMPLETED)
            enrollment.finished_at = utcnow()
            session.add(enrollment)
            webhooks_out.journey_finished(session, enrollment)  # journey events out
