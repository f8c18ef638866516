"""Request dependencies: settings, database session, the services, and one family of
load-or-404 loaders (routers import these, never each other)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session

from api.errors import not_found
from services.events import Events
from services.journeys import Journeys
from services.simulation import Simulator
from services.tracking import Tracking
from settings import Settings
from storage.models import Campaign


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


def get_journeys(request: Request) -> Journeys:
    journeys: Journeys = request.app.state.journeys
    return journeys


def get_events(request: Request) -> Events:
    events: Events = request.app.state.events
    return events


def get_simulator(request: Request) -> Simulator:
    simulator: Simulator = request.app.state.simulator
    return simulator


def get_tracking(request: Request) -> Tracking:
    return Tracking(request.app.state.engine, request.app.state.journeys)


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SessionDep = Annotated[Session, Depends(get_session)]
JourneysDep = Annotated[Journeys, Depends(get_journeys)]
EventsDep = Annotated[Events, Depends(get_events)]
TrackingDep = Annotated[Tracking, Depends(get_tracking)]
SimulatorDep = Annotated[Simulator, Depends(get_simulator)]


def load_or_404(session: Session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise not_found("campaign", campaign_id)
    return campaign


def load_campaign(campaign_id: int, session: SessionDep) -> Campaign:
    return load_or_404(session, campaign_id)


CampaignDep = Annotated[Campaign, Depends(load_campaign)]
