"""Request dependencies: settings, database session, Temporal, and load-or-404 loaders."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session

from api.errors import not_found
from api.journeys import Journeys
from settings import Settings
from storage.models import Campaign


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


def get_journeys(request: Request) -> Journeys:
    return request.app.state.journeys


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SessionDep = Annotated[Session, Depends(get_session)]
JourneysDep = Annotated[Journeys, Depends(get_journeys)]


def load_campaign(campaign_id: int, session: SessionDep) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise not_found("campaign", campaign_id)
    return campaign


CampaignDep = Annotated[Campaign, Depends(load_campaign)]
