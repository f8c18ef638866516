"""The worker: runs journeys and their activities. Start any number: `python worker.py`."""

from __future__ import annotations

import asyncio
import compileall
import concurrent.futures
import functools
import logging
import signal
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.converter import _payload_converter as payload_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    PollerBehaviorSimpleMaximum,
    UnsandboxedWorkflowRunner,
    Worker,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.bookkeeping import BookkeepingActivities
from activities.enrollment_batch import EnrollmentBatchActivities
from activities.sending import SendingActivities
from activities.timing import TimingActivities
from activities.tracked import TrackedEventActivities
from activities.webhooks_out import WebhookActivities
from domain.webhooks_out import webhook_task_queue
from mail.transport import build_transport
from observability.history import HistoryAlert
from observability.logs import configure_logging, temporal_core_logging
from observability.tracing import configure_tracing, traced_transport, with_interceptors
from services import webhooks_out
from services.journeys import Journeys
from services.webhook_subscriptions import SecretBox
from settings import Settings, get_settings
from storage.db import make_engine
from storage.migrate import upgrade
from storage.suppression import use_hash_keys
from temporal_client import connect_temporal, register_search_attributes
from workflows.enrollment_batch import EnrollmentBatchWorkflow
from workflows.recipient import RecipientWorkflow
from workflows.resend import ResendWorkflow
from workflows.webhook_delivery import WebhookDeliveryWorkflow

log = logging.getLogger("drip.worker")

WORKFLOWS_DIR = Path(__file__).resolve().parent / "workflows"
# Most journey workflow tasks come on the normal queue, not the sticky one: new journeys, and
# journeys woken after a long sleep, long since evicted from the cache. The SDK's default ratio
# of 0.2 leaves one poller there, which bounded first tasks (docs/performance.md).
NONSTICKY_TO_STICKY_POLL_RATIO = 1.0
# What the journey workflows import of ours: passed through the sandbox in `passthrough` mode.
JOURNEY_MODULES = ("workflows", "domain")


def cache_converter_type_hints() -> None:
    """The SDK's JSON converter calls typing.get_type_hints on every dataclass of every value it
    decodes: a journey's input and plan, on each activation that decodes them, about half of
    the decode's cost (docs/performance.md). A class's hints do not change, so they are cached;
    bounded, because an isolated sandbox makes new classes for every run."""
    resolve = getattr(payload_converter, "get_type_hints")  # noqa: B009  # the SDK's own name
    if not hasattr(resolve, "cache_info"):
        setattr(payload_converter, "get_type_hints", functools.lru_cache(maxsize=1024)(resolve))  # noqa: B010


def compile_workflow_modules(*directories: Path) -> None:
    """Write the workflow modules' bytecode. The sandbox re-imports a workflow's module for every
    run it creates; with no .pyc (PYTHONDONTWRITEBYTECODE, as in our Dockerfile) each of those
    imports compiled the source again: a third of the cost of a journey's first task."""
    for directory in directories:
        if not compileall.compile_dir(directory, quiet=1):
            log.warning("no bytecode written for %s: workflow runs will start slower", directory)


def journey_runner(mode: str) -> WorkflowRunner:
    """The journeys' runner (DRIP_WORKFLOW_SANDBOX). `unsandboxed`, the production worker's: the
    SDK's sandbox proxies every payload's serialization context through code it compiles anew
    per call, about a sixth of the worker's CPU per message (docs/performance.md); `passthrough`
    imports the workflow modules once into the sandbox; `isolated` re-imports them per run.
    Every workflow test and replay runs isolated, and the determinism lint checks the workflow
    and domain code, so what the production worker no longer checks is still checked."""
    if mode == "unsandboxed":
        return UnsandboxedWorkflowRunner()
    if mode == "isolated":
        return SandboxedWorkflowRunner()
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*JOURNEY_MODULES)
    )


SEND_SLOTS = 64  # sends at once per queue: each mostly waits on SMTP and the database
BOOKKEEPING_SLOTS = 32  # the journey queue's other activities (old journeys' bookkeeping)
# The sync activities' threads, started as needed. The sends are async and take none, but the
# SDK sizes against every slot of a worker.
EXECUTOR_THREADS = BOOKKEEPING_SLOTS + SEND_SLOTS


def build_workers(
    client: Client,
    settings: Settings,
    engine: Engine,
    executor: concurrent.futures.Executor,
    *,
    sandbox: str = "isolated",
) -> list[Worker]:
    """Four workers on one client: journeys (workflows, bookkeeping, and the sends of journeys
    that send on their own queue: Settings.journey_send_queue), sends on the send queue, which
    carries the cluster-wide DRIP_SEND_RATE limit, enrollment batches, and webhook deliveries
    (journey events out). The journey runner is the isolated sandbox unless told (the
    production worker: DRIP_WORKFLOW_SANDBOX)."""
    client = with_interceptors(client)  # request ids and tracing, on every worker
    use_hash_keys(settings.suppression_keys)
    journey = BookkeepingActivities(engine)
    tracked = TrackedEventActivities(engine)
    timing = TimingActivities(engine)
    sending = SendingActivities(
        settings,
        engine,
        traced_transport(  # the SMTP span, when tracing is on
            build_transport(settings.smtp_url, settings.outbox_dir, settings.smtp_timeout_seconds)
        ),
    )
    sends: list[Callable[..., Any]] = [sending.send_step, sending.resend_delivery]
    # On SIGTERM (a deploy, Ctrl-C) let running sends finish and record `sent`: one cancelled
    # between the SMTP server's 250 and that commit would be sent again. Longer than the send
    # deadline, so a stalled send ends by itself first.
    let_sends_finish = timedelta(seconds=settings.send_deadline_seconds + 10)
    return [
        Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[RecipientWorkflow, ResendWorkflow],
            workflow_runner=journey_runner(sandbox),
            activities=[
                journey.load_plan,
                journey.load_version_plan,
                journey.record_skip,
                journey.finish_journey,
                tracked.load_tracked_events,
                timing.compute_send_time,
                timing.reserve_cap_slot,
                *sends,
            ],
            max_cached_workflows=settings.workflow_cache_size,
            interceptors=[HistoryAlert(settings.journey_history_alert_events)],
            activity_executor=executor,
            max_concurrent_activities=BOOKKEEPING_SLOTS + SEND_SLOTS,
            # Paced here too: a journey started by a process that did not know the rate (or
            # before it was set) sends on this queue.
            max_task_queue_activities_per_second=settings.send_rate,
            graceful_shutdown_timeout=let_sends_finish,
            workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(settings.workflow_task_polls),
            nonsticky_to_sticky_poll_ratio=NONSTICKY_TO_STICKY_POLL_RATIO,
        ),
        Worker(
            client,
            task_queue=settings.send_task_queue,
            activities=sends,
            max_concurrent_activities=SEND_SLOTS,
            max_task_queue_activities_per_second=settings.send_rate,
            graceful_shutdown_timeout=let_sends_finish,
        ),
        build_batch_worker(client, settings, engine, executor),
        build_webhook_worker(client, settings, engine, executor),
    ]


def build_webhook_worker(
    client: Client, settings: Settings, engine: Engine, executor: concurrent.futures.Executor
) -> Worker:
    """Journey events out: one workflow per delivery, its POST attempts on this queue only."""
    box = SecretBox(settings.secret_key, settings.old_secret_keys)
    hooks = WebhookActivities(webhooks_out.Deliverer(engine, box, settings.webhook_allow_private))
    return Worker(
        with_interceptors(client),
        task_queue=webhook_task_queue(settings.task_queue),
        workflows=[WebhookDeliveryWorkflow],
        activities=[hooks.deliver_webhook, hooks.give_up_webhook],
        activity_executor=executor,
        max_concurrent_activities=16,
    )


def build_batch_worker(
    client: Client, settings: Settings, engine: Engine, executor: concurrent.futures.Executor
) -> Worker:
    """Enrollment batches: a few at a time, each starting journeys as fast as the server takes."""
    client = with_interceptors(client)
    use_hash_keys(settings.suppression_keys)
    journeys = Journeys.from_settings(client, settings)
    enrollment = EnrollmentBatchActivities(engine, journeys)
    return Worker(
        client,
        task_queue=settings.batch_task_queue,
        workflows=[EnrollmentBatchWorkflow],
        activities=[enrollment.enroll_batch_chunk, enrollment.finish_enrollment_batch],
        activity_executor=executor,
        max_concurrent_activities=4,
    )


async def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level)
    configure_tracing("drip-worker")
    metrics = None
    if settings.worker_metrics_port:
        # Serves the SDK's metrics and the app's send counter (observability/metrics.py).
        metrics = PrometheusConfig(bind_address=f"0.0.0.0:{settings.worker_metrics_port}")
    # The SDK core's own log lines through ours, so they are JSON too.
    runtime = Runtime(telemetry=TelemetryConfig(logging=temporal_core_logging(), metrics=metrics))
    if settings.env == "development":
        # As in the API: a fresh checkout just works; production migrates as a deploy step.
        await asyncio.to_thread(upgrade, settings.database_url)
    compile_workflow_modules(WORKFLOWS_DIR)
    cache_converter_type_hints()
    engine = make_engine(settings.database_url)
    client = await connect_temporal(settings, runtime=runtime)
    await register_search_attributes(client)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Journey events recorded here (sends, skips, ends) reach Temporal right after their commit.
    hooks_queue = webhook_task_queue(settings.task_queue)
    webhooks_out.install(webhooks_out.HandOver(client, engine, hooks_queue))
    with concurrent.futures.ThreadPoolExecutor(max_workers=EXECUTOR_THREADS) as executor:
        workers = build_workers(
            client,
            settings,
            engine,
            executor,
            sandbox=settings.workflow_sandbox,
        )
        log.info(
            "worker polling %s and %s on %s",
            settings.task_queue,
            settings.send_task_queue,
            settings.temporal_address,
        )
        async with asyncio.TaskGroup() as group:
            for worker in workers:
                group.create_task(worker.run())
            await stop.wait()
            log.info("worker shutting down")
            await asyncio.gather(*(worker.shutdown() for worker in workers))


if __name__ == "__main__":
    asyncio.run(main())
