"""The dashboard's forms (POST): sign in and out, and every change the pages offer, each made by
the same route function or service the API's own route calls. Each form carries this session's
CSRF token (api/ui/session.py) and is refused (403) without it. A refusal is shown in words next
to the control that caused it, on the page the form came from; a success answers 303 to a GET."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import yaml
from fastapi import APIRouter, HTTPException, Request, UploadFile
from pydantic import ValidationError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import Response

from api.deps import (
    EngineDep,
    JourneysDep,
    SessionDep,
    SettingsDep,
    SimulatorDep,
    load_or_404,
)
from api.routes import campaigns as campaign_routes
from api.routes import (
    enrollment_batches,
    recipients,
    simulation,
    suppressions,
    templates,
    trial_send,
    versions,
    webhook_subscriptions,
)
from api.schemas import (
    CampaignCreate,
    CampaignUpdate,
    PublishRequest,
    SimulationRequest,
    SuppressionCreate,
    TemplateCreate,
    TrialSendRequest,
    WebhookSubscriptionCreate,
)
from api.ui import pages
from api.ui.render import redirect, render
from api.ui.session import (
    CSRF_FIELD,
    LoginRequired,
    Viewer,
    allowed,
    check_csrf,
    key_allowed,
    new_viewer,
    viewer_of,
)
from cli.campaign_file import CampaignFile
from services.errors import Conflict, Invalid, ServiceError
from storage.models import Template

router = APIRouter(include_in_schema=False)

# The verbs of the status buttons, and the status each asks for.
STATUS_ACTIONS = {
    "activate": "active",
    "pause": "paused",
    "resume": "active",
    "archive": "archived",
}


async def checked_form(request: Request, viewer: Viewer | None = None) -> tuple[Viewer, FormData]:
    """The viewer (signed in when keys are set) and the form, once its CSRF token matched."""
    viewer = viewer or viewer_of(request)
    form = await request.form()
    check_csrf(request.app.state.settings, viewer, form.get(CSRF_FIELD))
    if not allowed(request, viewer):
        raise LoginRequired()
    return viewer, form


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def in_words(exc: Exception) -> str:
    """What went wrong, as the API would say it in its problem's `detail`."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        return f"{where}: {message}" if where else message
    if isinstance(exc, HTTPException):
        detail = exc.detail
        if isinstance(detail, list) and detail:
            return str(detail[0].get("msg", detail))
        return str(detail)
    return str(exc)


REFUSALS = (ServiceError, HTTPException, ValidationError)


# --- signing in ------------------------------------------------------------------------------


@router.get("/ui/login")
def login_page(request: Request) -> Response:
    viewer = viewer_of(request)
    if viewer.signed_in or not request.app.state.settings.api_keys:
        return redirect(request, viewer, "/ui/")
    return render(request, viewer, "login.html", next=request.query_params.get("next", ""))


def safe_next(target: str) -> str:
    """Only a path of the dashboard itself: never an open redirect."""
    return target if target.startswith("/ui/") and not target.startswith("//") else "/ui/"


@router.post("/ui/login")
async def login(request: Request, settings: SettingsDep) -> Response:
    viewer = viewer_of(request)
    form = await request.form()
    check_csrf(settings, viewer, form.get(CSRF_FIELD))
    key = text(form, "key")
    if not settings.api_keys:
        return redirect(request, viewer, "/ui/")
    if not key or not key_allowed(settings, key):
        return render(
            request,
            viewer,
            "login.html",
            status_code=401,
            next=text(form, "next"),
            errors={"key": "That is not one of the API keys (DRIP_API_KEYS)."},
        )
    return redirect(request, new_viewer(settings, key), safe_next(text(form, "next")))


@router.post("/ui/logout")
async def logout(request: Request, settings: SettingsDep) -> Response:
    viewer, _ = await checked_form(request)
    return redirect(request, new_viewer(settings), "/ui/login" if settings.api_keys else "/ui/")


# --- campaigns -------------------------------------------------------------------------------


def create_from_definition(session: Session, source: str) -> int:
    """A campaign and its templates from the command line's campaign file (YAML or JSON): what
    `drip campaign create FILE` makes, through the routes `drip` would call."""
    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML or JSON: {exc}") from exc
    spec = CampaignFile.model_validate(data)
    if any(t.html_file or t.text_file for t in spec.templates.values()):
        raise ValueError("html_file and text_file cannot be read here: paste html and text")
    made: dict[str, int] = {}
    try:
        for key, body in spec.template_bodies(Path(".")).items():
            made[key] = templates.create_template(TemplateCreate(**body), session).id or 0
        create = CampaignCreate(**spec.fields(), steps=spec.step_bodies(made))
        campaign = campaign_routes.create_campaign(create, session)
    except Exception:
        session.rollback()
        for template_id in made.values():  # leave nothing half-made behind, like `drip`
            template = session.get(Template, template_id)
            if template is not None:
                session.delete(template)
        session.commit()
        raise
    if spec.activate:  # from a draft: no journey runs yet, so no change to tell
        campaign, _ = campaign_routes.apply_update(
            session, campaign.id, CampaignUpdate(status="active")
        )
    return campaign.id


@router.post("/ui/campaigns")
async def create_campaign(request: Request, session: SessionDep) -> Response:
    viewer, form = await checked_form(request)
    source = text(form, "definition")
    try:
        if not source:
            raise ValueError("paste a campaign definition (the YAML of `drip campaign create`)")
        campaign_id = await run_in_threadpool(create_from_definition, session, source)
    except (*REFUSALS, ValueError) as exc:
        context = await run_in_threadpool(pages.campaigns_context, session, None)
        return render(
            request,
            viewer,
            "campaigns.html",
            status_code=422,
            definition=source,
            errors={"definition": in_words(exc)},
            **context,
        )
    return redirect(request, viewer, f"/ui/campaigns/{campaign_id}")


async def campaign_refused(
    request: Request, viewer: Viewer, session: Session, campaign_id: int, field: str, exc: Exception
) -> Response:
    context = await run_in_threadpool(pages.campaign_context, session, campaign_id)
    status = 409 if isinstance(exc, Conflict) else 422
    return render(
        request,
        viewer,
        "campaign.html",
        status_code=status,
        errors={field: in_words(exc)},
        **context,
    )


@router.post("/ui/campaigns/{campaign_id}/status")
async def change_status(
    request: Request,
    campaign_id: int,
    session: SessionDep,
    engine: EngineDep,
    journeys: JourneysDep,
) -> Response:
    viewer, form = await checked_form(request)
    action = text(form, "action")
    try:
        if action not in STATUS_ACTIONS:
            raise ValueError(f"unknown action {action!r}: one of {', '.join(STATUS_ACTIONS)}")
        update = CampaignUpdate(status=STATUS_ACTIONS[action])
        await campaign_routes.update_campaign(campaign_id, update, session, engine, journeys)
    except (*REFUSALS, ValueError) as exc:
        return await campaign_refused(request, viewer, session, campaign_id, "status", exc)
    return redirect(request, viewer, f"/ui/campaigns/{campaign_id}")


@router.post("/ui/campaigns/{campaign_id}/versions")
async def create_version(request: Request, campaign_id: int, session: SessionDep) -> Response:
    viewer, _ = await checked_form(request)
    try:
        campaign = await run_in_threadpool(load_or_404, session, campaign_id)
        await run_in_threadpool(versions.create_version, campaign, session)
    except REFUSALS as exc:
        return await campaign_refused(request, viewer, session, campaign_id, "version", exc)
    return redirect(request, viewer, f"/ui/campaigns/{campaign_id}#versions")


@router.post("/ui/campaigns/{campaign_id}/versions/{number}/publish")
async def publish_version(
    request: Request,
    campaign_id: int,
    number: int,
    session: SessionDep,
    engine: EngineDep,
    journeys: JourneysDep,
) -> Response:
    viewer, form = await checked_form(request)
    try:
        body = PublishRequest(policy=text(form, "policy"))
        await versions.publish_version(campaign_id, number, body, session, engine, journeys)
    except REFUSALS as exc:
        return await campaign_refused(request, viewer, session, campaign_id, "publish", exc)
    return redirect(request, viewer, f"/ui/campaigns/{campaign_id}#versions")


@router.post("/ui/campaigns/{campaign_id}/import")
async def import_csv(
    request: Request,
    campaign_id: int,
    session: SessionDep,
    engine: EngineDep,
    journeys: JourneysDep,
) -> Response:
    viewer, form = await checked_form(request)
    upload = form.get("file")
    try:
        if not hasattr(upload, "filename") or not getattr(upload, "filename", ""):
            raise ValueError("choose a CSV file with an email column")
        accepted = await enrollment_batches.import_recipients(
            campaign_id, cast(UploadFile, upload), session, engine, journeys
        )
    except (*REFUSALS, ValueError) as exc:
        return await campaign_refused(request, viewer, session, campaign_id, "file", exc)
    return redirect(
        request, viewer, f"/ui/campaigns/{campaign_id}?batch={accepted.batch_id}#enroll"
    )


@router.post("/ui/campaigns/{campaign_id}/test-send")
async def test_send(
    request: Request, campaign_id: int, session: SessionDep, settings: SettingsDep
) -> Response:
    viewer, form = await checked_form(request)
    try:
        body = TrialSendRequest(email=text(form, "email"))
        result = await trial_send.send_trial(campaign_id, body, session, settings)
    except REFUSALS as exc:
        return await campaign_refused(request, viewer, session, campaign_id, "test_email", exc)
    context = await run_in_threadpool(pages.campaign_context, session, campaign_id)
    sent: dict[str, Any] = {"email": body.email, "sent": [s.model_dump() for s in result.sent]}
    return render(request, viewer, "campaign.html", test_sent=sent, **context)


def simulation_request(form: FormData) -> tuple[dict[str, Any], list[int]]:
    """The body of POST /api/campaigns/{id}/simulate from the simulation form, and the form row
    of each event in it (so a refusal of `events[i]` is shown next to its row)."""
    body: dict[str, Any] = {"events": []}
    if text(form, "sim_email"):
        body["email"] = text(form, "sim_email")
    if text(form, "sim_timezone"):
        body["fields"] = {"timezone": text(form, "sim_timezone")}
    if text(form, "sim_start_at"):
        # a datetime-local value, read as UTC (the label says so)
        body["start_at"] = text(form, "sim_start_at") + "Z"
    if text(form, "sim_version"):
        body["version"] = text(form, "sim_version")
    rows = []
    for row in range(pages.SIMULATION_ROWS):
        kind = text(form, f"ev{row}_type")
        if not kind:
            continue
        event: dict[str, Any] = {"type": kind, "after_hours": text(form, f"ev{row}_after") or "0"}
        if text(form, f"ev{row}_step"):
            event["step_order"] = text(form, f"ev{row}_step")
        target = text(form, f"ev{row}_target")
        if target:
            event["event" if kind == "track" else "url"] = target
        body["events"].append(event)
        rows.append(row)
    return body, rows


def simulation_field(loc: list[Any], rows: list[int]) -> str:
    """The form control a refused field belongs to: `events.1.after_hours` -> that row's."""
    loc = [part for part in loc if part != "body"]
    if len(loc) >= 2 and loc[0] == "events" and isinstance(loc[1], int) and loc[1] < len(rows):
        return f"ev{rows[loc[1]]}"
    if loc and loc[0] == "fields":
        return "sim_timezone"
    return f"sim_{loc[0]}" if loc and loc[0] in ("email", "start_at", "version") else "sim"


@router.post("/ui/campaigns/{campaign_id}/simulate")
async def simulate(
    request: Request, campaign_id: int, session: SessionDep, simulator: SimulatorDep
) -> Response:
    """A rehearsal through the API's own route: the timeline shown is its answer."""
    viewer, form = await checked_form(request)
    body, rows = simulation_request(form)
    entered = {key: text(form, key) for key in form if key != CSRF_FIELD}
    try:
        request_body = SimulationRequest.model_validate(body)
        answer = await simulation.simulate_campaign(campaign_id, request_body, session, simulator)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = list(first["loc"])
        words = str(first["msg"]).removeprefix("Value error, ")
        errors = {simulation_field(loc, rows): f"{loc[-1]}: {words}" if loc else words}
        return await simulation_refused(request, viewer, session, campaign_id, entered, errors)
    except Invalid as exc:
        errors = {simulation_field(exc.loc, rows): f"{exc.loc[-1]}: {exc.msg}"}
        return await simulation_refused(request, viewer, session, campaign_id, entered, errors)
    context = await run_in_threadpool(pages.campaign_context, session, campaign_id)
    rehearsal = answer.model_dump(mode="json")
    return render(request, viewer, "campaign.html", simulated=rehearsal, sim=entered, **context)


async def simulation_refused(
    request: Request,
    viewer: Viewer,
    session: Session,
    campaign_id: int,
    entered: dict[str, str],
    errors: dict[str, str],
) -> Response:
    context = await run_in_threadpool(pages.campaign_context, session, campaign_id)
    return render(
        request, viewer, "campaign.html", status_code=422, sim=entered, errors=errors, **context
    )


@router.post("/ui/campaigns/{campaign_id}/remove")
async def remove_recipient(
    request: Request, campaign_id: int, session: SessionDep, journeys: JourneysDep
) -> Response:
    viewer, form = await checked_form(request)
    email = text(form, "email")
    await recipients.remove_recipient(campaign_id, email, session, journeys, None)
    return redirect(request, viewer, f"/ui/campaigns/{campaign_id}/recipients/{email}")


# --- suppressions ----------------------------------------------------------------------------


@router.post("/ui/suppressions")
async def suppress(
    request: Request, session: SessionDep, engine: EngineDep, journeys: JourneysDep
) -> Response:
    viewer, form = await checked_form(request)
    try:
        body = SuppressionCreate(email=text(form, "email"), reason=text(form, "reason") or "manual")
        await suppressions.suppress(body, Response(), engine, journeys)
    except REFUSALS as exc:
        context = await run_in_threadpool(pages.suppressions_context, session, None, 0)
        return render(
            request,
            viewer,
            "suppressions.html",
            status_code=422,
            errors={"email": in_words(exc)},
            **context,
        )
    return redirect(request, viewer, "/ui/suppressions")


@router.post("/ui/suppressions/remove")
async def unsuppress(request: Request, session: SessionDep) -> Response:
    viewer, form = await checked_form(request)
    await run_in_threadpool(suppressions.unsuppress, text(form, "email"), session)
    return redirect(request, viewer, "/ui/suppressions")


# --- settings: webhook subscriptions ---------------------------------------------------------


@router.post("/ui/settings/webhooks")
async def subscribe(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """A new subscription through the API's route; its secret is on this answer only (a
    redirect would have to carry it), never shown again."""
    viewer, form = await checked_form(request)
    chosen = [value for value in form.getlist("events") if isinstance(value, str)]
    entered = {"url": text(form, "url"), "description": text(form, "description"), "events": chosen}
    try:
        body = WebhookSubscriptionCreate(
            url=entered["url"], events=chosen, description=entered["description"] or None
        )
        created = await webhook_subscriptions.create_subscription(body, session, settings)
    except (*REFUSALS, ValueError) as exc:
        field = "events" if isinstance(exc, ValidationError) and _about(exc, "events") else "url"
        context = await pages.webhooks_context(session, None)
        errors = {f"webhook_{field}": in_words(exc)}
        return render(
            request, viewer, "webhooks.html", status_code=422, errors=errors, entered=entered,
            **context,
        )  # fmt: skip
    context = await pages.webhooks_context(session, None)
    shown = created.model_dump(mode="json")
    return render(request, viewer, "webhooks.html", status_code=201, created=shown, **context)


def _about(exc: ValidationError, field: str) -> bool:
    return bool(exc.errors()) and exc.errors()[0]["loc"][:1] == (field,)


@router.post("/ui/settings/webhooks/{subscription_id}/delete")
async def unsubscribe(request: Request, subscription_id: int, session: SessionDep) -> Response:
    viewer, _ = await checked_form(request)
    await webhook_subscriptions.delete_subscription(subscription_id, session)
    return redirect(request, viewer, "/ui/settings/webhooks")
