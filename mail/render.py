"""Templates: Jinja2 in a sandbox. A missing field renders empty (or its `default(...)`), so a
render never fails a journey at send time; a template that does not compile is refused at save."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import html2text
from jinja2 import ChainableUndefined, Template, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

_html_env = ImmutableSandboxedEnvironment(autoescape=True, undefined=ChainableUndefined)
_text_env = ImmutableSandboxedEnvironment(autoescape=False, undefined=ChainableUndefined)


class TemplateError(ValueError):
    """A template that does not compile: message says where."""


def check_template(source: str) -> None:
    try:
        _text_env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: {exc.message}") from exc


@dataclass
class Rendered:
    subject: str
    html: str
    text: str


def build_context(
    email: str,
    fields: dict[str, Any] | None,
    *,
    campaign: dict[str, Any] | None = None,
    step: dict[str, Any] | None = None,
    unsubscribe_url: str = "",
) -> dict[str, Any]:
    """Recipient fields at the top level (`{{ first_name }}`), plus `email`, `recipient`,
    `campaign`, `step` and `unsubscribe_url`. Fields never shadow the reserved names."""
    fields = dict(fields or {})
    context: dict[str, Any] = dict(fields)
    context.update(
        email=email,
        recipient={**fields, "email": email},
        campaign=campaign or {},
        step=step or {},
        unsubscribe_url=unsubscribe_url,
    )
    return context


@lru_cache(maxsize=128)
def _compiled(source: str, html: bool) -> Template:
    # Compiling was the costliest part of a render, and a campaign sends the same few
    # templates thousands of times (docs/performance.md). Compiled templates are immutable.
    return (_html_env if html else _text_env).from_string(source)


def render(subject: str, html: str, text: str | None, context: dict[str, Any]) -> Rendered:
    rendered_html = _compiled(html, True).render(context)
    if text:
        rendered_text = _compiled(text, False).render(context)
    else:
        rendered_text = html_to_text(rendered_html)
    rendered_subject = " ".join(_compiled(subject, False).render(context).split())
    return Rendered(subject=rendered_subject, html=rendered_html, text=rendered_text)


def html_to_text(html: str) -> str:
    converter = html2text.HTML2Text()
    converter.body_width = 0  # no hard wrapping: links stay whole
    converter.ignore_images = True
    return converter.handle(html).strip() + "\n"
