"""The text part derived once per HTML source is the text html2text makes of each message:
the same, or where a value has spaces at its edges or renders empty (an empty list item), the
same text but for where those spaces and line breaks fall."""

from __future__ import annotations

import pytest

from mail.render import _derived_text, build_context, html_to_text, render

LONG = "".join(
    f'<p>Paragraph {i}, <b>bold</b> <a href="https://example.com/p{i}?u={{{{ email }}}}">'
    f"link {i}</a> &amp; more.</p>"
    for i in range(200)
)
TEMPLATES = {
    "fields": '<p>Hi {{ first_name | default("there") }},</p><p>for {{ email }}</p>',
    "links": '<a href="{{ url }}">go</a> <a href="https://x.example/{{ email }}">{{ url }}!</a>',
    "list": "<ul><li>{{ first_name }}</li><li>two</li></ul><h2>{{ campaign.name }}</h2>",
    "long": f"<h1>Hello {{{{ first_name }}}}</h1>{LONG}<p>Bye {{{{ email }}}}</p>",
    "empty-ends": "{{ missing }}<p>middle</p>{{ missing }}",
}
FIELDS = [
    {},
    {"first_name": "Zoë", "url": "https://example.com/a?b=1&c=2"},
    {"first_name": '  Ann   <b>&amp;</b> "q"  ', "url": "https://example.com/x y"},
]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("fields", FIELDS)
def test_derived_text_equals_html2text_of_the_rendered_html(name: str, fields: dict) -> None:  # type: ignore[type-arg]
    html = TEMPLATES[name]
    assert _derived_text(html) is not None, name  # the fast path is the one taken
    context = build_context("a_b@example.com", fields, campaign={"name": "Spring  sale"})
    rendered = render("s", html, None, context)
    per_message = html_to_text(rendered.html)
    assert "".join(rendered.text.split()) == "".join(per_message.split())
    if name in ("fields", "long", "links") and fields is not FIELDS[2]:  # the very bytes
        assert rendered.text == per_message


@pytest.mark.parametrize(
    "html",
    [
        "{% for i in range(3) %}<p>{{ i }}</p>{% endfor %}",
        "{% if first_name %}<p>Hi {{ first_name }}</p>{% endif %}",
        "<p>{{ first_name | safe }}</p>",
        "<p>{# note #}{{ email }}</p>",
        '<a href="{{ url }}">{{ url }}</a>',  # <url> or [url](url), as the value has it
        "<img alt='{{ email }}' src='x'>",  # the expression vanishes from the text: per message
    ],
)
def test_templates_that_reshape_the_markup_are_converted_per_message(html: str) -> None:
    assert _derived_text(html) is None
    context = build_context("a@example.com", {"first_name": "<i>Ann</i>"})
    rendered = render("s", html, None, context)
    assert rendered.text == html_to_text(rendered.html)
