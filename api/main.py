"""The FastAPI application: `uvicorn api.main:app`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping

from fastapi import FastAPI
from temporalio.client import Client

from api import errors, idempotency, out_of_range
from api.body_limit import BodyLimitMiddleware
from api.monitoring import install_monitoring
from api.routes import (
    campaigns,
    deliveries,
    enrollment_batches,
    erasure,
    events,
    frequency_cap,
    funnel,
    health,
    recipients,
    simulation,
    suppressions,
    templates,
    track,
    tracking,
    trial_send,
    versions,
    webhook_subscriptions,
    webhooks,
)
from api.schemas import document_examples
from api.security import API_KEY, check_bind, install_security
from api.ui import install as install_dashboard
from domain.webhooks_out import webhook_task_queue
from observability.logs import configure_logging
from observability.request_ids import RequestIdMiddleware
from observability.tracing import configure_tracing, instrument_app, with_interceptors
from services import webhooks_out
from services.events import Events
from services.journeys import Journeys
from services.outbox import run_outbox
from services.simulation import Simulator
from settings import Settings, get_settings
from storage.db import make_engine
from storage.migrate import upgrade
from storage.suppression import use_hash_keys
from temporal_client import connect_temporal
from webhooks import WebhookProvider, build_providers

log = logging.getLogger("drip.api")

DESCRIPTION = """Self-hostable drip campaigns on Temporal. Every recipient's journey is a durable
workflow; inspect them in the Temporal Web UI by id (`drip-campaign-{id}-{email}`) or by the
search attributes `CampaignId`, `RecipientEmail`, `DripStatus`, `DripHeld` (`send_window` or
`frequency_cap` while a message is held back) and `CampaignVersion` (the campaign version the
journey runs). Who is at which step: `GET /api/campaigns/{id}/recipients?current_step=N`."""


def create_app(
    settings: Settings | None = None,
    temporal: Client | None = None,
    webhook_providers: Mapping[str, WebhookProvider] | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    # Before uvicorn's first line ("Started server process"): every line is JSON.
    configure_logging(settings.log_level)
    configure_tracing("drip-api")
    use_hash_keys(settings.suppression_keys)  # erased addresses' suppressions (storage/)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level)
        check_bind(settings)  # no key: loopback only, or refuse to start
        if settings.env == "development":
            # Convenience for `uvicorn api.main:app` on a fresh checkout. Elsewhere the schema
            # is a deploy step (`python -m storage.migrate`), never raced by starting replicas.
            await asyncio.to_thread(upgrade, settings.database_url)
        # Built first so a bad webhook key fails startup; tests inject their own (SNS fetchers).
        app.state.webhook_providers = (
            webhook_providers if webhook_providers is not None else build_providers(settings)
        )
        engine = make_engine(settings.database_url)
        client = with_interceptors(temporal or await connect_temporal(settings, lazy=True))
        journeys = Journeys.from_settings(client, settings)
        events = Events(engine, settings.reputation_limits, journeys)
        app.state.settings = settings
        app.state.engine = engine
        app.state.journeys = journeys
        app.state.events = events
        # Rehearsals (POST /api/campaigns/{id}/simulate) on a time-skipping server kept warm.
        app.state.simulator = simulator = Simulator()
        if settings.simulation_warm:
            simulator.warm()
        # Journey events recorded by a request (an unsubscribe, a bounce, a start) reach
        # Temporal right after their commit; the outbox hands over what a crash left.
        handover = webhooks_out.HandOver(client, engine, webhook_task_queue(settings.task_queue))
        before = webhooks_out.install(handover)
        outbox = asyncio.create_task(
            run_outbox(engine, journeys, events, settings.outbox_interval_seconds)
        )
        try:
            yield
        finally:
            outbox.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await outbox
            await journeys.drain()
            await handover.drain()
            await simulator.close()
            webhooks_out.install(before)
            engine.dispose()

    app = FastAPI(title="drip", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    # The API proper: the key is checked again on every route of these (api/security.py).
    for protected in (
        templates,
        campaigns,
        versions,
        simulation,
        trial_send,
        recipients,
        enrollment_batches,
        funnel,
        deliveries,
        events,
        track,
        suppressions,
        erasure,
        frequency_cap,
        webhook_subscriptions,
    ):
        app.include_router(
            protected.router, dependencies=[API_KEY], responses=errors.problems(401, 403, 421)
        )
    # Open by design (security.OPEN_PREFIXES / OPEN_PATHS): signed links, signed webhooks, ops.
    app.include_router(webhooks.router)
    app.include_router(tracking.router)
    app.include_router(health.router)
    install_dashboard(app)  # /ui/: its own session cookie (api/ui/session.py), not the bearer key
    errors.install(app)  # every error as problem+json, in the schema too
    document_examples(app)  # an example on every schema (enums: their first value)
    # Before security: inside it, so a key is claimed only by an authorised request.
    idempotency.install(app)
    out_of_range.install(app)  # huge ids and offsets: 422, not a database error
    # Bodies counted as they stream (chunked too); inside security, so a refused caller's body
    # is never read at all. CSV imports have their own, larger limit.
    app.add_middleware(
        BodyLimitMiddleware,
        default=settings.max_body_bytes,
        routes={
            r"/api/campaigns/[^/]+/recipients/import": settings.max_upload_bytes,
            r"/ui/campaigns/[^/]+/import": settings.max_upload_bytes,  # the dashboard's upload
        },
    )
    install_security(app, settings)  # every /api/* route, including routers added later
    install_monitoring(app)  # after security: outermost, so it counts the 401s too
    app.add_middleware(RequestIdMiddleware)  # outermost: every line of every request has one
    instrument_app(app)  # request spans, when OTEL_TRACES_EXPORTER turns tracing on

    return app


app = create_app()
