"""Per-message cost of building and flattening a campaign message: the `email` package
(build_message + flatten, as the send path did) against the bytes built once (mail/mime.py).

    .venv/bin/python -m tools.mime_bench            # the bench's template and a 35 KiB one
    .venv/bin/python -m tools.mime_bench --runs 9   # more repeats on a busy machine

Each message is rendered and tracked once (mail/compose.message_parts, tracking on, as the send
activity does); only the build is timed, the best of `--runs` rounds of `--number` builds each
(the minimum is what a busy machine lets through least disturbed).
"""

from __future__ import annotations

import argparse
import timeit

from mail.compose import Draft, message_parts
from mail.message import MessageParts, build_message, flatten
from mail.mime import build_wire
from mail.tokens import Tokens

# bench/scenarios.py's template, as the sending runs post it.
BENCH_HTML = '<p>Hi {{ email }}</p><a href="https://example.com/a">a</a>'
# Newsletter-sized: paragraphs with links, bold, entities, a few expressions (~35 KiB).
PARAGRAPH = (
    '<p>Paragraph {i}: <b>news</b> for {{{{ first_name | default("you") }}}}, with a '
    '<a href="https://shop.example/p{i}?utm_source=drip&amp;utm_medium=email">link to item {i}'
    "</a> &amp; a few more words to make a line of an ordinary marketing email.</p>\n"
)
LARGE_HTML = (
    "<html><body><h1>Hello {{ first_name }}</h1>\n"
    + "".join(PARAGRAPH.format(i=i) for i in range(160))
    + "<p>Bye {{ email }}</p></body></html>"
)


def parts_for(html: str) -> MessageParts:
    draft = Draft(
        delivery_id="01JQ8ZK3V6W7X8Y9Z0ABCDEFGH",
        email="jane@example.org",
        campaign_id=7,
        campaign_name="Spring sale",
        from_email="news@sender.example",
        from_name="Acme News",
        step_order=1,
        step_subject="Hello",
        subject="Hello {{ first_name }}",
        html=html,
        text=None,
        fields={"first_name": "Jane"},
    )
    tokens = Tokens("bench-secret")
    parts, _ = message_parts(draft, tokens, "https://mail.example.com", tracking=True)
    return parts


def best_ms(build: object, runs: int, number: int) -> float:
    times = timeit.repeat(build, number=number, repeat=runs)  # type: ignore[arg-type]
    return min(times) / number * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--number", type=int, default=100)
    args = parser.parse_args()
    print("template        size     package ms  built ms  ratio  path")
    for name, html in (("bench", BENCH_HTML), ("35 KiB", LARGE_HTML)):
        parts = parts_for(html)
        built, _ = build_wire(parts)
        reference, _ = build_message(parts, date=built.date, boundary=built.boundary)
        assert built.data == flatten(reference), "the bytes differ from the email package's"
        before = best_ms(lambda: flatten(build_message(parts)[0]), args.runs, args.number)  # noqa: B023
        after = best_ms(lambda: build_wire(parts)[0].data, args.runs, args.number)  # noqa: B023
        path = "template" if built.templated else "package"
        size = f"{len(built.data) / 1024:.1f} KiB"
        ratio = f"{before / after:.1f}x"
        print(f"{name:<14} {size:>9}  {before:>9.3f}  {after:>8.3f}  {ratio:>5}  {path}")


if __name__ == "__main__":
    main()
