"""The FastAPI application: `uvicorn api.main:app`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from temporalio.client import Client

from api.journeys import Journeys
from api.outbox import run_outbox
from api.routes import campaigns, events, recipients, templates
from settings import Settings, get_settings
from storage.db import create_schema, make_engine
from temporal_client import connect_temporal

log = logging.getLogger("drip.api")

DESCRIPTION = """Self-hostable drip campaigns on Temporal. Every recipient's journey is a durable
workflow; inspect them in the Temporal Web UI by id (`drip-campaign-{id}-{email}`) or by the
search attributes `CampaignId`, `RecipientEmail`, `DripStep` and `DripStatus`."""


def create_app(settings: Settings | None = None, temporal: Client | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        await asyncio.to_thread(create_schema, engine)
        client = temporal or await connect_temporal(settings, lazy=True)
        journeys = Journeys(client, settings.pause_recheck_seconds)
        app.state.settings = settings
        app.state.engine = engine
        app.state.journeys = journeys
        outbox = asyncio.create_task(run_outbox(engine, journeys, settings.outbox_interval_seconds))
        try:
            yield
        finally:
            outbox.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await outbox
            engine.dispose()

    app = FastAPI(title="drip", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.include_router(templates.router)
    app.include_router(campaigns.router)
    app.include_router(recipients.router)
    app.include_router(events.router)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


app = create_app()
