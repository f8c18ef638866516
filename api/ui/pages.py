"""The dashboard's pages (GET): each reads through the same route functions and services as the
API answers with (api/routes/), so a page shows exactly what the API says; the numbers come from
the running counters (storage/counters.py), never from counting rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, RedirectResponse, Response

from api import pagination
from api.deps import JourneysDep, SessionDep, TrackingDep, load_or_404
from api.routes import campaigns as campaign_routes
from api.routes import (
    enrollment_batches,
    events,
    funnel,
    recipients,
    suppressions,
    track,
    versions,
    webhook_subscriptions,
)
from api.schemas import PublishRequest, enrollment_public
from api.ui.render import render
from api.ui.session import LoginRequired, Viewer, allowed, viewer_of
from domain.journey import CampaignStatus, EventType, JourneyStatus
from domain.webhooks_out import JourneyEventType
from services.errors import Invalid
from storage.models import Campaign, Enrollment, Event, Template

STATIC = Path(__file__).parent / "static"
PAGE_SIZE = 50
# Funnel figures shown as a line under each step's chart, when not zero.
ALSO = ["bounced", "unsubscribed", "complained", "uncertain", "failed", "deferred_by_cap"]
ALSO += ["skipped_by_cap"]


def page_viewer(request: Request) -> Viewer:
    viewer = viewer_of(request)
    if not allowed(request, viewer):
        raise LoginRequired()
    return viewer


ViewerDep = Depends(page_viewer)
router = APIRouter(include_in_schema=False)


@router.get("/")
def root() -> Response:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui")
def ui_root() -> Response:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/favicon.ico")
def favicon() -> Response:
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


# --- campaigns -------------------------------------------------------------------------------


def campaign_rows(session: Session, status: str | None) -> list[dict[str, Any]]:
    """Each campaign with the API's stats, and the conversion rate of its funnel."""
    rows = []
    for summary in campaign_routes.list_campaigns(session):
        if status and summary.status != status:
            continue
        stats = campaign_routes.campaign_stats(session, summary.id).model_dump()
        converted = funnel.campaign_funnel(load_or_404(session, summary.id), session)
        stats["conversion_rate"] = converted.conversion_rate
        rows.append({**summary.model_dump(), "stats": stats})
    return rows


def campaigns_context(session: Session, status: str | None) -> dict[str, Any]:
    return {
        "campaigns": campaign_rows(session, status),
        "status": status or "",
        "statuses": [s.value for s in CampaignStatus],
    }


@router.get("/ui/")
def campaigns_page(
    request: Request,
    session: SessionDep,
    viewer: Viewer = ViewerDep,
    status: str | None = Query(None, max_length=20),
) -> Response:
    return render(request, viewer, "campaigns.html", **campaigns_context(session, status))


# --- one campaign ----------------------------------------------------------------------------


def funnel_rows(session: Session, campaign: Campaign) -> dict[str, Any]:
    """The API's funnel, with each bar's share of the step's widest figure for the chart."""
    data = funnel.campaign_funnel(campaign, session).model_dump()
    for step in data["steps"]:
        step["also"] = [(name, step[name]) for name in ALSO if step.get(name)]
        step["widest"] = max(step["reached"], step["sent"] + step["alternative_sent"], 1)
    return data


def numbers_context(session: Session, campaign_id: int) -> dict[str, Any]:
    """What the campaign page refreshes: the API's stats and funnel, all from the counters."""
    campaign = load_or_404(session, campaign_id)
    stats = campaign_routes.campaign_stats(session, campaign_id).model_dump()
    shown = funnel_rows(session, campaign)
    stats["converted"], stats["conversion_rate"] = shown["converted"], shown["conversion_rate"]
    return {"campaign_id": campaign_id, "stats": stats, "funnel": shown}


POLICIES = ["stay", "migrate", "exit"]
# The simulation form's event rows (each used when its type is chosen), and those types.
SIMULATION_ROWS = 5
SIMULATION_EVENTS = {
    "open": "opens step",
    "click": "clicks in step",
    "track": "performs the product event",
    "unsubscribe": "unsubscribes from step",
    "bounce_hard": "hard-bounces on step",
    "complaint": "complains about step",
}


def versions_context(
    session: Session, campaign: Campaign, preview: str | None = None
) -> dict[str, Any]:
    """The campaign's versions as the API lists them; its draft, if any, with the publish
    preview (the API's dry run) for the policy asked for."""
    listed = versions.list_versions(campaign, session, 100, None).model_dump(mode="json")
    draft = next((v for v in listed["items"] if v["status"] == "draft"), None)
    context: dict[str, Any] = {"versions": listed["items"], "draft": None, "policies": POLICIES}
    if draft is not None:
        number = draft["version"]
        public = versions.get_version(campaign, number, session)
        context["draft"] = public.model_dump(mode="json")
        if preview in POLICIES:
            body = PublishRequest(policy=preview, dry_run=True)
            impact, _ = versions.publish_or_preview(session, campaign.id or 0, number, body)
            context["impact"] = impact.model_dump(mode="json")
    return context


def campaign_context(
    session: Session, campaign_id: int, preview: str | None = None
) -> dict[str, Any]:
    context = numbers_context(session, campaign_id)
    campaign = load_or_404(session, campaign_id)
    context.update(versions_context(session, campaign, preview))
    public = campaign_routes.get_campaign(campaign, session)
    context["campaign"] = public.model_dump(mode="json")
    steps = context["campaign"]["steps"]
    ids = {s["template_id"] for s in steps} | {
        s["alternative"]["template_id"] for s in steps if s["alternative"]
    }
    ids |= {v["template_id"] for s in steps for v in s.get("variants") or [] if "template_id" in v}
    names = session.exec(select(Template.id, Template.name).where(col(Template.id).in_(ids)))
    context["template_names"] = dict(names.all())
    context["simulation_rows"] = range(SIMULATION_ROWS)
    context["simulation_events"] = SIMULATION_EVENTS
    return context


@router.get("/ui/campaigns/{campaign_id}")
def campaign_page(
    request: Request,
    campaign_id: int,
    session: SessionDep,
    viewer: Viewer = ViewerDep,
    batch: int | None = Query(None, ge=1),
    preview: str | None = Query(None, max_length=10, description="a publish policy to preview"),
) -> Response:
    context = campaign_context(session, campaign_id, preview)
    if batch is not None:
        context["batch"] = batch_context(session, batch)
    return render(request, viewer, "campaign.html", **context)


@router.get("/ui/campaigns/{campaign_id}/numbers")
def campaign_numbers(
    request: Request, campaign_id: int, session: SessionDep, viewer: Viewer = ViewerDep
) -> Response:
    """The live part of the campaign page (htmx polls it)."""
    return render(request, viewer, "_numbers.html", **numbers_context(session, campaign_id))


def batch_context(session: Session, batch_id: int) -> dict[str, Any]:
    progress = enrollment_batches.get_batch(batch_id, session, 100, 0).model_dump()
    done = progress["status"] in ("completed", "cancelled")
    accepted = progress["accepted"] or 0
    share = 1.0 if done else (progress["processed"] / accepted if accepted else 0.0)
    return {**progress, "done": done, "percent": round(share * 100)}


@router.get("/ui/batches/{batch_id}")
def batch_fragment(
    request: Request, batch_id: int, session: SessionDep, viewer: Viewer = ViewerDep
) -> Response:
    return render(request, viewer, "_batch.html", batch=batch_context(session, batch_id))


# --- recipients ------------------------------------------------------------------------------


def recipients_context(
    session: Session,
    campaign_id: int,
    status: str | None,
    step: int | None,
    email: str | None,
    cursor: str | None,
) -> dict[str, Any]:
    """A page of a campaign's recipients, by status then enrollment order: the order of the
    (campaign_id, status) index, so a page is read off the index, never sorting or counting
    the campaign's rows; the next page starts after this one's last (status, id)."""
    campaign = load_or_404(session, campaign_id)
    query = select(Enrollment).where(Enrollment.campaign_id == campaign_id)
    if status:
        query = query.where(Enrollment.status == status)
    if step is not None:
        query = query.where(Enrollment.current_step == step)
    if email:
        prefix = email.strip().lower()
        query = query.where(col(Enrollment.email).startswith(prefix))
        if prefix and session.get_bind().dialect.name == "sqlite":
            # SQLite's LIKE cannot use the email index; the same prefix as a range can
            # (binary collation: exactly the addresses that start with it).
            upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            query = query.where(col(Enrollment.email) >= prefix, col(Enrollment.email) < upper)
    try:
        key = pagination.decode(cursor, 2)
    except Invalid:
        key = None  # a cursor we did not make: the first page
    rows = _page_after(session, query, key)
    shown = rows[:PAGE_SIZE]
    more = len(rows) > PAGE_SIZE
    return {
        "campaign": campaign_routes.get_campaign(campaign, session).model_dump(),
        "rows": [enrollment_public(e).model_dump() for e in shown],
        "next_cursor": pagination.encode((shown[-1].status, shown[-1].id or 0)) if more else None,
        "filters": {"status": status or "", "step": step, "email": email or ""},
        "statuses": [s.value for s in JourneyStatus],
        "first_page": key is None,
    }


def _page_after(session: Session, query: Any, key: tuple[Any, ...] | None) -> list[Enrollment]:
    """Up to PAGE_SIZE + 1 rows after `key` in (status, id) order (the extra one says there is a
    next page): the rest of the key's status, then the statuses after it — two range reads of
    the index, where one row-value comparison would make the planners scan."""
    order = (col(Enrollment.status), col(Enrollment.id))
    if key is None:
        return list(session.exec(query.order_by(*order).limit(PAGE_SIZE + 1)))
    last_status, last_id = key
    same = query.where(Enrollment.status == last_status, col(Enrollment.id) > last_id)
    rows = list(session.exec(same.order_by(*order).limit(PAGE_SIZE + 1)))
    if len(rows) <= PAGE_SIZE:
        later = query.where(col(Enrollment.status) > last_status)
        rows += session.exec(later.order_by(*order).limit(PAGE_SIZE + 1 - len(rows)))
    return rows


@router.get("/ui/campaigns/{campaign_id}/recipients")
def recipients_page(
    request: Request,
    campaign_id: int,
    session: SessionDep,
    viewer: Viewer = ViewerDep,
    status: str | None = Query(None, max_length=20),
    step: str | None = Query(None, max_length=6),
    email: str | None = Query(None, max_length=320),
    after: str | None = Query(None, max_length=200, description="the page's cursor"),
) -> Response:
    step_order = int(step) if step and step.isdigit() else None
    context = recipients_context(session, campaign_id, status, step_order, email, after)
    return render(request, viewer, "recipients.html", **context)


# --- one journey -----------------------------------------------------------------------------


def temporal_link(request: Request, workflow_id: str) -> str:
    settings = request.app.state.settings
    namespace = quote(settings.temporal_namespace, safe="")
    workflow = quote(workflow_id, safe="")
    return f"{settings.temporal_ui_url}/namespaces/{namespace}/workflows/{workflow}"


async def journey_context(
    request: Request,
    session: Session,
    journeys: Any,
    tracking: Any,
    campaign_id: int,
    email: str,
    entry: int | None,
) -> dict[str, Any]:
    """The API's journey view (each step's `reason` exactly as it gives it), the plan, the
    journey's events."""
    view = await recipients.get_journey(campaign_id, email, session, journeys, entry)
    journey = view.model_dump(mode="json")
    campaign = await run_in_threadpool(load_or_404, session, campaign_id)
    public = await run_in_threadpool(campaign_routes.get_campaign, campaign, session)
    plan = {s["step_order"]: s for s in public.model_dump()["steps"]}
    journey_events = await run_in_threadpool(
        events.list_events, session, None, journey["email"], campaign_id, 200, 0
    )
    tracked = await track.list_tracked_events(journey["email"], tracking, 50, None)
    return {
        "campaign": public.model_dump(),
        "journey": journey,
        "plan": plan,
        "events": [e.model_dump(exclude={"raw"}) for e in journey_events],
        "tracked": tracked.model_dump(mode="json")["items"],
        "temporal_url": temporal_link(request, journey["workflow_id"]),
    }


@router.get("/ui/campaigns/{campaign_id}/recipients/{email:path}")
async def journey_page(
    request: Request,
    campaign_id: int,
    email: str,
    session: SessionDep,
    journeys: JourneysDep,
    tracking: TrackingDep,
    viewer: Viewer = ViewerDep,
    entry: int | None = Query(None, ge=1),
) -> Response:
    context = await journey_context(request, session, journeys, tracking, campaign_id, email, entry)
    return render(request, viewer, "journey.html", **context)


@router.get("/ui/campaigns/{campaign_id}/journey-live")
async def journey_live(
    request: Request,
    campaign_id: int,
    session: SessionDep,
    journeys: JourneysDep,
    tracking: TrackingDep,
    viewer: Viewer = ViewerDep,
    email: str = Query(max_length=320),
    entry: int | None = Query(None, ge=1),
) -> Response:
    """The live part of the journey page (htmx polls it)."""
    context = await journey_context(request, session, journeys, tracking, campaign_id, email, entry)
    return render(request, viewer, "_journey_live.html", **context)


# --- suppressions and events -----------------------------------------------------------------


def suppressions_context(session: Session, email: str | None, offset: int) -> dict[str, Any]:
    page = suppressions.list_suppressions(session, email or None, None, PAGE_SIZE, offset)
    return {"page": page.model_dump(), "email": email or "", "offset": offset}


@router.get("/ui/suppressions")
def suppressions_page(
    request: Request,
    session: SessionDep,
    viewer: Viewer = ViewerDep,
    email: str | None = Query(None, max_length=320),
    offset: int = Query(0, ge=0, le=10_000_000),
) -> Response:
    context = suppressions_context(session, email, offset)
    return render(request, viewer, "suppressions.html", **context)


def recent_events(session: Session, provider: str | None, kind: str | None) -> dict[str, Any]:
    query = select(Event)
    if provider:
        query = query.where(Event.provider == provider)
    if kind:
        query = query.where(Event.type == kind)
    rows = session.exec(query.order_by(col(Event.id).desc()).limit(PAGE_SIZE)).all()
    return {
        "events": [e.model_dump(exclude={"raw"}) for e in rows],
        "provider": provider or "",
        "kind": kind or "",
        # "self": our own pixel, links and unsubscribe; "api": POST /api/events.
        "providers": ["self", "api", "smtp", "sendgrid", "postmark", "mailgun", "ses", "resend"],
        "kinds": [t.value for t in EventType],
    }


@router.get("/ui/events")
def events_page(
    request: Request,
    session: SessionDep,
    viewer: Viewer = ViewerDep,
    provider: str | None = Query(None, max_length=40),
    type: str | None = Query(None, max_length=40),
) -> Response:
    return render(request, viewer, "events.html", **recent_events(session, provider, type))


@router.get("/ui/events/rows")
def event_rows(
    request: Request,
    session: SessionDep,
    viewer: Viewer = ViewerDep,
    provider: str | None = Query(None, max_length=40),
    type: str | None = Query(None, max_length=40),
) -> Response:
    """The live tail (htmx polls it)."""
    return render(request, viewer, "_event_rows.html", **recent_events(session, provider, type))


# --- settings: webhook subscriptions ---------------------------------------------------------


async def webhooks_context(session: Session, after: str | None) -> dict[str, Any]:
    """A page of the subscriptions as the API lists them (its cursor page), and the event types
    a new one may ask for."""
    try:
        listed = await webhook_subscriptions.list_subscriptions(session, PAGE_SIZE, after)
    except Invalid:
        listed = await webhook_subscriptions.list_subscriptions(session, PAGE_SIZE, None)
    return {
        "subscriptions": listed.model_dump(mode="json"),
        "event_types": [t.value for t in JourneyEventType],
    }


@router.get("/ui/settings/webhooks")
async def webhooks_page(
    request: Request,
    session: SessionDep,
    viewer: Viewer = ViewerDep,
    after: str | None = Query(None, max_length=200, description="the page's cursor"),
) -> Response:
    context = await webhooks_context(session, after)
    return render(request, viewer, "webhooks.html", **context)
