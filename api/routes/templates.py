"""Templates: Jinja2 sources for a message's HTML and text parts."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlmodel import col, or_, select

from api.deps import SessionDep
from api.errors import conflict, invalid, not_found, problems
from api.idempotency import Idempotent
from api.schemas import (
    RenderedPreview,
    TemplateCreate,
    TemplatePreview,
    TemplatePublic,
    TemplateUpdate,
)
from mail.render import TemplateError, build_context, check_template, render
from storage.models import Step, Template, utcnow

router = APIRouter(prefix="/api/templates", tags=["templates"])


def _check(field: str, source: str | None) -> None:
    if source is None:
        return
    try:
        check_template(source)
    except TemplateError as exc:
        raise invalid(["body", field], f"template {exc}") from exc


def _load(session: SessionDep, template_id: int) -> Template:
    template = session.get(Template, template_id)
    if template is None:
        raise not_found("template", template_id)
    return template


@router.post(
    "",
    operation_id="createTemplate",
    summary="Create a template",
    responses=problems(409),
    status_code=201,
    response_model=TemplatePublic,
    dependencies=[Idempotent],
)
def create_template(body: TemplateCreate, session: SessionDep) -> Template:
    _check("html", body.html)
    _check("text", body.text)
    template = Template(name=body.name, html=body.html, text=body.text)
    session.add(template)
    session.commit()
    return template


@router.get(
    "", operation_id="listTemplates", summary="List templates", response_model=list[TemplatePublic]
)
def list_templates(session: SessionDep) -> list[Template]:
    return list(session.exec(select(Template).order_by(col(Template.id))))


@router.get(
    "/{template_id}",
    operation_id="getTemplate",
    summary="Read a template",
    responses=problems(404),
    response_model=TemplatePublic,
)
def get_template(template_id: int, session: SessionDep) -> Template:
    return _load(session, template_id)


@router.patch(
    "/{template_id}",
    operation_id="updateTemplate",
    summary="Change a template",
    responses=problems(404),
    response_model=TemplatePublic,
)
def update_template(template_id: int, body: TemplateUpdate, session: SessionDep) -> Template:
    template = _load(session, template_id)
    changes = body.model_dump(exclude_unset=True)
    for field in ("html", "text"):
        _check(field, changes.get(field))
    if "html" in changes and changes["html"] is None:
        raise invalid(["body", "html"], "html cannot be empty")
    for key, value in changes.items():
        setattr(template, key, value)
    template.updated_at = utcnow()
    session.add(template)
    session.commit()
    return template


@router.delete(
    "/{template_id}",
    operation_id="deleteTemplate",
    summary="Delete a template no step uses",
    responses=problems(404, 409),
    status_code=204,
)
def delete_template(template_id: int, session: SessionDep) -> Response:
    template = _load(session, template_id)
    used = session.exec(
        select(Step).where(
            or_(Step.template_id == template_id, Step.alt_template_id == template_id)
        )
    ).first()
    if used is not None:
        raise conflict(
            f"template {template_id} is used by step {used.id} of campaign {used.campaign_id}"
        )
    session.delete(template)
    session.commit()
    return Response(status_code=204)


@router.post(
    "/{template_id}/preview",
    operation_id="previewTemplate",
    summary="Render a template with sample data",
    responses=problems(404),
    response_model=RenderedPreview,
)
def preview_template(
    template_id: int, body: TemplatePreview, session: SessionDep
) -> RenderedPreview:
    template = _load(session, template_id)
    context = build_context(body.email, body.fields, unsubscribe_url="#unsubscribe")
    try:
        rendered = render("", template.html, template.text, context)
    except Exception as exc:
        raise invalid(["body", "fields"], f"template failed to render: {exc}") from exc
    return RenderedPreview(html=rendered.html, text=rendered.text)
