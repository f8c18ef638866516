"""Templates: Jinja2 in a sandbox with a work budget (mail/sandbox.py). A missing field renders
empty (or its `default(...)`), so a render never fails a journey at send time; a template that
does not compile, or that overruns the budget even without fields, is refused at save."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import html2text
from jinja2 import Template, TemplateSyntaxError

from mail.sandbox import BudgetedEnvironment, BudgetExceeded, budgeted, render_budgeted

_html_env = BudgetedEnvironment(autoescape=True)
_text_env = BudgetedEnvironment(autoescape=False)


class TemplateError(ValueError):
    """A template refused at save: it does not compile (the message says where), or it
    overruns the render budget."""


def check_template(source: str) -> None:
    try:
        template = _compiled(source, False)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"does not compile: line {exc.lineno}: {exc.message}") from exc
    # A trial render without fields: what overruns the budget now overruns it at every send.
    # Other errors may depend on the fields (a division by a field): the send's business.
    try:
        with budgeted():
            render_budgeted(template, build_context("jane.doe@example.com", {}))
    except BudgetExceeded as exc:
        raise TemplateError(f"too costly to render: {exc}") from exc
    except Exception:  # noqa: BLE001, S110
        pass


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
    event: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Recipient fields at the top level (`{{ first_name }}`), plus `email`, `recipient`,
    `campaign`, `step`, `unsubscribe_url` and `event` (the tracked event that enrolled the
    journey through a trigger: `{{ event.name }}`, `{{ event.properties.plan }}`; empty
    otherwise). Fields never shadow the reserved names."""
    fields = dict(fields or {})
    context: dict[str, Any] = dict(fields)
    context.update(
        email=email,
        recipient={**fields, "email": email},
        campaign=campaign or {},
        step=step or {},
        unsubscribe_url=unsubscribe_url,
        event=event or {},
    )
    return context


@lru_cache(maxsize=128)
def _compiled(source: str, html: bool) -> Template:
    # Compiling was the costliest part of a render, and a campaign sends the same few
    # templates thousands of times (docs/performance.md). Compiled templates are immutable.
    return (_html_env if html else _text_env).from_string(source)


def render(subject: str, html: str, text: str | None, context: dict[str, Any]) -> Rendered:
    """Raises `BudgetExceeded` (a ValueError) when the three parts together overrun the budget."""
    with budgeted():
        rendered_html = render_budgeted(_compiled(html, True), context)
        derived = None if text else _derived_text(html)
        if text:
            rendered_text = render_budgeted(_compiled(text, False), context)
        elif derived is not None:
            rendered_text = render_budgeted(derived, context).strip() + "\n"
        else:
            rendered_text = html_to_text(rendered_html)
        rendered_subject = " ".join(render_budgeted(_compiled(subject, False), context).split())
    return Rendered(subject=rendered_subject, html=rendered_html, text=rendered_text)


def html_to_text(html: str) -> str:
    converter = html2text.HTML2Text()
    converter.body_width = 0  # no hard wrapping: links stay whole
    converter.ignore_images = True
    return converter.handle(html).strip() + "\n"


_EXPRESSION = re.compile(r"\{\{.*?\}\}", re.S)
_PLACEHOLDER = "DRIPTEXT{}X"  # letters and digits: html2text passes them through as they are
# A template whose output is more than its expressions' values in fixed markup: html2text must
# see each message's HTML (blocks and comments reshape it; `safe` values are markup).
# A link whose text is one expression may be written <url> or [text](url) depending on its value.
_NOT_DERIVABLE = re.compile(r"\{%|\{#|\bsafe\b|DRIPTEXT|>\s*\{\{[^<]*\}\}\s*</a", re.I)


@lru_cache(maxsize=128)
def _derived_text(html: str) -> Template | None:
    """The text part's template, converted from the HTML source once (html2text costs 2-10 ms
    per message on real 10-50 KiB templates): each `{{ expression }}` stands in as a
    placeholder while the markup is converted, then comes back, its whitespace collapsed as
    html2text collapses text (the one difference: spaces at a value's edges, and line breaks
    around an element whose value is empty, may fall differently). None when the template is
    not only expressions in fixed markup."""
    if _NOT_DERIVABLE.search(html):
        return None
    expressions: dict[str, str] = {}

    def hold(match: re.Match[str]) -> str:
        return expressions.setdefault(match.group(0), _PLACEHOLDER.format(len(expressions)))

    converted = html_to_text(_EXPRESSION.sub(hold, html))
    for expression, placeholder in expressions.items():
        if converted.count(placeholder) != html.count(expression):  # dropped or split: no
            return None
        inner = expression[2:-2].strip()
        converted = converted.replace(
            placeholder, f"{{{{ (({inner}) | string).split() | join(' ') }}}}"
        )
    try:
        return _text_env.from_string(converted)
    except TemplateSyntaxError:
        return None
