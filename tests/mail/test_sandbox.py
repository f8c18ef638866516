"""Templates render under a budget (mail/sandbox.py): loops, calls, sizes and time are bounded,
so no template or field value can make one render take minutes or gigabytes. Each case below
rendered for minutes or built tens of megabytes before."""

from __future__ import annotations

import time

import pytest

from mail.render import TemplateError, build_context, check_template, render
from mail.sandbox import DEADLINE_SECONDS, MAX_CHARS, BudgetExceeded

CONTEXT = build_context("jo@example.com", {"first_name": "Jo", "n": 100_000_000})

COSTLY = {
    "nested loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
    "{% endfor %}",
    "repeat": "{{ 'x' * 50000000 }}",
    "repeat, reversed": "{{ 50000000 * 'x' }}",
    "padding filter": "{{ 'x'|center(100000000) }}",
    "padding method": "{{ 'x'.ljust(100000000) }}",
    "format width": "{{ '%100000000s'|format('x') }}",
    "percent width": "{{ '%100000000s' % 'x' }}",
    "star width": "{{ '%*s' % (100000000, 'x') }}",
    "str.format width": "{{ '{:>100000000}'.format('x') }}",
    "power": "{{ 2 ** 100000000 }}",
    "replace": "{{ ('x' * 1000000)|replace('', 'yyyyyyyy') }}",
    "join filter": "{{ range(100000)|join('y' * 1000) }}",
    "doubling": "{% set ns = namespace(a='x' * 1000) %}{% for i in range(40) %}"
    "{% set ns.a = ns.a ~ ns.a %}{% endfor %}{{ ns.a }}",
    "doubling with +": "{% set ns = namespace(a='x' * 1000) %}{% for i in range(40) %}"
    "{% set ns.a = ns.a + ns.a %}{% endfor %}{{ ns.a }}",
    "output": "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}",
    "wordwrap": "{{ ('x' * 100000)|wordwrap(1, wrapstring='y' * 1000) }}",
    "indent": "{{ ('x\\n' * 100000)|indent(1000) }}",
}


@pytest.mark.parametrize("name", sorted(COSTLY))
def test_costly_templates_are_refused_at_save_and_at_render(name: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateError, match="too costly to render"):
        check_template(COSTLY[name])
    with pytest.raises(BudgetExceeded):
        render("Hi", COSTLY[name], None, CONTEXT)
    assert time.monotonic() - started < 2 * DEADLINE_SECONDS + 1


def test_a_field_driven_loop_is_bounded_when_it_renders() -> None:
    # Fine at save (no fields), too costly for this recipient: the render stops, not the worker.
    source = "{% for i in range(n|int) %}{% for j in range(n|int) %}.{% endfor %}{% endfor %}"
    check_template(source)
    started = time.monotonic()
    with pytest.raises(BudgetExceeded):
        render("Hi", source, None, build_context("jo@example.com", {"n": 100000}))
    assert time.monotonic() - started < DEADLINE_SECONDS + 1


def test_the_subject_and_text_share_the_budget() -> None:
    loop = "{% for i in range(60000) %}{% endfor %}"
    render(loop, "<p>x</p>", None, CONTEXT)  # 60,000 steps: within one budget
    with pytest.raises(BudgetExceeded, match="loop iterations"):
        render(loop, "<p>x</p>", loop, CONTEXT)  # 120,000 in one message


def test_ordinary_templates_render_as_before() -> None:
    html = (
        "<p>Hi {{ first_name|default('there')|title }}, {{ '%05d'|format(42) }} "
        "{{ '{:,}'.format(12345678) }} {{ ', '.join(['a', 'b']) }} {{ 'x' * 3 }} "
        "{% for k, v in recipient|dictsort %}{{ k }}={{ v }};{% endfor %} {{ 'a' ~ 'b' }} "
        "{{ (recipient.email|replace('@', ' at ')) }} {{ 2 ** 10 }} {{ 'x'|center(7) }}|</p>"
    )
    rendered = render("Hello {{ first_name }}", html, None, CONTEXT)
    assert rendered.subject == "Hello Jo"
    assert rendered.html == (
        "<p>Hi Jo, 00042 12,345,678 a, b xxx email=jo@example.com;first_name=Jo;n=100000000; "
        "ab jo at example.com 1024    x   |</p>"
    )
    # Large but legitimate: half the limit.
    half = MAX_CHARS // 2
    assert len(render("s", f"{{{{ 'x' * {half} }}}}", None, CONTEXT).html) == half
