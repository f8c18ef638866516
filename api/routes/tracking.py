"""Our own tracking and unsubscribe endpoints, the URLs inside every message we send:

- `GET /t/o/{token}.gif`  open pixel: always the image, whatever the token;
- `GET /t/c/{token}`      click redirect: the target is the link stored with that delivery,
                          never anything from the URL, so there is no open redirect;
- `GET|POST /u/{token}`   RFC 8058 one-click unsubscribe: POST acts, GET only shows a page.

Hits are stored through services/events like any provider's event, answered, and then signalled to
the journey after the response (a signal that fails is re-driven by the outbox) when they change
it: the first human open of a delivery, the first human click of each of its links. `HEAD` is
answered and records nothing: scanners use it. Each token records a few hits a minute at most
(api/hit_limit.py): the rest are answered and counted, not stored.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from html import escape

from fastapi import APIRouter, BackgroundTasks, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import select
from starlette.concurrency import run_in_threadpool

from api.deps import EngineDep, EventsDep, SettingsDep
from api.hit_limit import HitLimiter
from domain.events import IncomingEvent
from domain.journey import EventType
from mail.classify import Hit, Thresholds, classify
from mail.tokens import Tokens
from observability.metrics import TRACKING_HITS_LIMITED
from services.events import Events
from settings import Settings
from storage.db import session_scope
from storage.inserts import insert_ignoring_conflicts
from storage.models import Delivery, Enrollment, Event, Suppression, utcnow

log = logging.getLogger(__name__)

router = APIRouter(tags=["tracking"])

PROVIDER = "self"
# A 1x1 transparent GIF (43 bytes).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
PRIVATE = {"Cache-Control": "no-cache, no-store, private", "X-Robots-Tag": "noindex"}
# The token in our URL is nobody else's business: keep it out of the target's Referer.
REDIRECT_HEADERS = {**PRIVATE, "Referrer-Policy": "no-referrer"}
ONE_CLICK = b"List-Unsubscribe=One-Click"


def _tokens(settings: Settings) -> Tokens:
    # Verifying: the old keys too (DRIP_OLD_SECRET_KEYS), for links sent before a rotation.
    return _tokens_of(settings.secret_key, tuple(settings.old_secret_keys))


@lru_cache(maxsize=4)
def _tokens_of(secret_key: str, old_keys: tuple[str, ...]) -> Tokens:
    return Tokens(secret_key, old_keys)


@lru_cache(maxsize=4)
def _limiter(per_minute: int) -> HitLimiter:
    return HitLimiter(per_minute)


def _allowed(settings: Settings, token: str, kind: str) -> bool:
    """Whether to record this hit (api/hit_limit.py); a hit over the limit is only counted."""
    if _limiter(settings.tracking_hits_per_minute).allow(token):
        return True
    TRACKING_HITS_LIMITED.labels(kind).inc()
    return False


def _thresholds(settings: Settings) -> Thresholds:
    return Thresholds(
        after_send_seconds=settings.machine_after_send_seconds,
        burst_links=settings.machine_burst_links,
        burst_seconds=settings.machine_burst_seconds,
        proxy_opens_are_human=settings.proxy_opens_are_human,
    )


# --- pages -----------------------------------------------------------------------------------


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="robots" content="noindex">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title></head>"
        '<body style="font-family:sans-serif;max-width:32em;margin:4em auto;padding:0 1em">'
        f"<h1>{escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(html, status_code=status_code, headers=PRIVATE)


# These answer people, not programs: their errors are pages.
PAGE_NOT_FOUND = {"description": "an invalid link (a page)", "content": {"text/html": {}}}


def _not_found() -> HTMLResponse:
    # Neutral on purpose: a forged token learns nothing about what exists.
    return _page("Link not found", "<p>This link is not valid.</p>", 404)


# --- recording -------------------------------------------------------------------------------


@dataclass
class _Target:
    delivery_id: str
    url: str | None
    sent_at: datetime | None
    earlier_clicks: list[tuple[datetime, str]] = field(default_factory=list)


def _lookup(engine: Engine, delivery_id: str, link_index: int | None) -> _Target | None:
    """The delivery a token names and, for a click, the link that message really carried."""
    with session_scope(engine) as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None:
            return None
        url = None
        earlier: list[tuple[datetime, str]] = []
        if link_index is not None:
            if not 0 <= link_index < len(delivery.links):
                return None
            url = delivery.links[link_index]
            if not url.lower().startswith(("https://", "http://")):
                return None
            earlier = [
                (e.occurred_at, e.url or "")
                for e in session.exec(
                    select(Event).where(
                        Event.delivery_id == delivery_id, Event.type == EventType.CLICK
                    )
                )
            ]
        return _Target(delivery_id, url, delivery.sent_at or delivery.send_started_at, earlier)


def _record_hit(
    events: Events, settings: Settings, kind: str, target: _Target, request: Request
) -> int:
    now = utcnow()
    user_agent = request.headers.get("user-agent")
    verdict = classify(
        Hit(kind, user_agent, now, target.sent_at, target.url, target.earlier_clicks),
        _thresholds(settings),
    )
    event = IncomingEvent(
        provider=PROVIDER,
        # Every hit is its own event; the journey dedupes on ingest.signal_key.
        dedupe_key=f"{kind}:{target.delivery_id}:{uuid.uuid4().hex}",
        type=kind,
        raw_type=kind,
        delivery_id=target.delivery_id,
        occurred_at=now,
        url=target.url,
        machine=verdict.machine,
        machine_reason=verdict.reason,
        raw={"user_agent": user_agent, "ip": request.client.host if request.client else None},
    )
    [stored] = events.store([event])
    return stored.id


# --- open pixel ------------------------------------------------------------------------------


@router.get(
    "/t/o/{token}.gif",
    operation_id="trackOpen",
    summary="The open-tracking pixel",
    response_class=Response,
    responses={200: {"description": "a 1x1 GIF, always", "content": {"image/gif": {}}}},
)
@router.head("/t/o/{token}.gif", response_class=Response, include_in_schema=False)
async def open_pixel(
    token: str,
    request: Request,
    background: BackgroundTasks,
    engine: EngineDep,
    settings: SettingsDep,
    events: EventsDep,
) -> Response:
    """The open pixel. Always the image: a bad token, or a failure to record, is no reason to
    show a broken image in someone's inbox."""
    delivery_id = _tokens(settings).read_open(token)
    if request.method == "GET" and delivery_id is not None and _allowed(settings, token, "open"):
        try:
            target = await run_in_threadpool(_lookup, engine, delivery_id, None)
            if target is not None:
                event_id = await run_in_threadpool(
                    _record_hit, events, settings, EventType.OPEN, target, request
                )
                background.add_task(events.signal_quietly, [event_id])
        except Exception:
            log.exception("could not record an open for %s", delivery_id)
    return Response(PIXEL, media_type="image/gif", headers=PRIVATE)


# --- click redirect --------------------------------------------------------------------------


@router.get(
    "/t/c/{token}",
    operation_id="trackClick",
    summary="A tracked link: records the click, redirects to the target",
    response_class=Response,
    status_code=307,
    responses={
        307: {
            "description": "to the link the message carried",
            "headers": {"Location": {"description": "the link", "schema": {"type": "string"}}},
        },
        404: PAGE_NOT_FOUND,
    },
)
@router.head("/t/c/{token}", response_class=Response, include_in_schema=False)
async def click(
    token: str,
    request: Request,
    background: BackgroundTasks,
    engine: EngineDep,
    settings: SettingsDep,
    events: EventsDep,
) -> Response:
    """Redirect (307) to the link the message carried. The token names only a delivery and a
    link index; a forged, tampered or out-of-range one gets a neutral 404 and records nothing."""
    ref = _tokens(settings).read_click(token)
    if ref is None:
        return _not_found()
    target = await run_in_threadpool(_lookup, engine, ref.delivery_id, ref.link_index)
    if target is None or target.url is None:
        return _not_found()
    if request.method == "GET" and _allowed(settings, token, "click"):
        try:
            event_id = await run_in_threadpool(
                _record_hit, events, settings, EventType.CLICK, target, request
            )
            background.add_task(events.signal_quietly, [event_id])
        except Exception:  # the person still gets where they were going
            log.exception("could not record a click for %s", ref.delivery_id)
    return RedirectResponse(target.url, status_code=307, headers=REDIRECT_HEADERS)


# --- one-click unsubscribe (RFC 8058) --------------------------------------------------------


@dataclass
class _Unsubscribed:
    event_id: int
    first: bool


def _delivery_exists(engine: Engine, delivery_id: str) -> bool:
    with session_scope(engine) as session:
        return session.get(Delivery, delivery_id) is not None


def _unsubscribe(events: Events, delivery_id: str, raw: dict[str, object]) -> _Unsubscribed | None:
    engine = events.engine
    with session_scope(engine) as session:
        delivery = session.get(Delivery, delivery_id)
        enrollment = session.get(Enrollment, delivery.enrollment_id) if delivery else None
        if delivery is None or enrollment is None:
            return None
        email = enrollment.email
    # One event per message, whatever the number of POSTs; ingest suppresses on its first insert.
    [stored] = events.store(
        [
            IncomingEvent(
                provider=PROVIDER,
                dedupe_key=f"unsubscribe:{delivery_id}",
                type=EventType.UNSUBSCRIBE,
                raw_type="one_click" if raw.get("one_click") else "unsubscribe",
                delivery_id=delivery_id,
                occurred_at=utcnow(),
                raw=raw,
            )
        ],
    )
    # The address stays suppressed after every POST, also when an operator lifted it since.
    with session_scope(engine) as session:
        insert_ignoring_conflicts(
            session,
            Suppression,
            [
                dict(
                    email=email,
                    reason=EventType.UNSUBSCRIBE.value,
                    source=PROVIDER,
                    created_at=utcnow(),
                )
            ],
            returning="email",
        )
    return _Unsubscribed(stored.id, not stored.duplicate)


async def _unsubscribe_until_recorded(
    events: Events, settings: Settings, delivery_id: str, raw: dict[str, object]
) -> _Unsubscribed | None:
    """Mailbox providers send a one-click POST once and never retry it: a database that is
    locked or failing over is waited out here (the writes are idempotent), for up to
    DRIP_UNSUBSCRIBE_RETRY_SECONDS, instead of answering 500 and losing the opt-out."""
    deadline = time.monotonic() + settings.unsubscribe_retry_seconds
    delay = 0.1
    while True:
        try:
            return await run_in_threadpool(_unsubscribe, events, delivery_id, raw)
        except SQLAlchemyError as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("recording an unsubscribe failed, retrying in %.1f s: %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _read_some(request: Request, limit: int = 4096) -> bytes:
    """The start of the body: enough to see `List-Unsubscribe=One-Click`, whatever the
    encoding (form or multipart), without reading an arbitrarily large body."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) >= limit:
            break
    return body[:limit]


@router.get(
    "/u/{token}",
    operation_id="getUnsubscribePage",
    summary="The unsubscribe confirmation page",
    response_class=HTMLResponse,
    responses={404: PAGE_NOT_FOUND},
)
@router.head("/u/{token}", response_class=HTMLResponse, include_in_schema=False)
async def unsubscribe_page(token: str, engine: EngineDep, settings: SettingsDep) -> HTMLResponse:
    """A page with a confirm button, and nothing else: mail software and scanners fetch the URLs
    in a message, so a GET must never unsubscribe anyone."""
    delivery_id = _tokens(settings).read_unsubscribe(token)
    if delivery_id is None or not await run_in_threadpool(_delivery_exists, engine, delivery_id):
        return _not_found()
    # No action attribute: the form posts back to this very URL, whatever proxy is in front.
    return _page(
        "Unsubscribe",
        "<p>Stop receiving these emails?</p>"
        '<form method="post">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>',
    )


@router.post(
    "/u/{token}",
    operation_id="unsubscribe",
    summary="Unsubscribe (one-click or the page's button)",
    response_class=HTMLResponse,
    responses={404: PAGE_NOT_FOUND},
)
async def unsubscribe(
    token: str,
    request: Request,
    background: BackgroundTasks,
    settings: SettingsDep,
    events: EventsDep,
) -> Response:
    """RFC 8058 one-click: no cookies, auth or CSRF check (a mailbox provider POSTs with no
    context); any body is accepted. The suppression is written before answering, the answer is
    200 and never a redirect, and repeating it changes nothing."""
    delivery_id = _tokens(settings).read_unsubscribe(token)
    if delivery_id is None:
        return _not_found()
    body = await _read_some(request)
    raw: dict[str, object] = {
        "one_click": ONE_CLICK in body,
        "user_agent": request.headers.get("user-agent"),
        "ip": request.client.host if request.client else None,
    }
    try:
        done = await _unsubscribe_until_recorded(events, settings, delivery_id, raw)
    except SQLAlchemyError:  # the database stayed unavailable for the whole retry window
        log.exception("one-click unsubscribe of %s could not be recorded", delivery_id)
        page = _page("Try again", "<p>We could not record this just now; please retry.</p>", 503)
        page.headers["Retry-After"] = "60"
        return page
    if done is None:
        return _not_found()
    if done.first:
        background.add_task(events.signal_quietly, [done.event_id])
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"unsubscribed": True}, headers=PRIVATE)
    return _page("Unsubscribed", "<p>You will not receive any more of these emails.</p>")
