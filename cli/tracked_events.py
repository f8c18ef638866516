"""`drip track` (a product event, or a JSON Lines file of them in batches of 1,000) and
`drip recipient events|set-fields` (a person's tracked events; new field values for their
running journeys). Registered on the main app when cli/main.py imports this module."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.main import Json, _segment, app, connected, console, fail, group, show, show_page

BATCH = 1000  # events per POST /api/track/batch (the API's maximum)

recipient_app = group("recipient", "A person across campaigns: tracked events, field values.")

Email = Annotated[str, typer.Argument(help="the person's address")]


def pairs(option: str, given: list[str] | None) -> dict[str, Any]:
    """`name=value` pairs; a value that reads as a JSON number, true, false, null or a quoted
    string is that (`amount=42`, `code="042"`), any other is text (`plan=pro`)."""
    values: dict[str, Any] = {}
    for pair in given or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise fail(f"{option} {pair!r}: expected name=value", code=2)
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        values[name] = parsed if not isinstance(parsed, dict | list) else value
    return values


@app.command()
def track(
    email: Annotated[str | None, typer.Argument(help="who did it")] = None,
    event: Annotated[str | None, typer.Argument(help="what they did, e.g. plan.upgraded")] = None,
    property: Annotated[
        list[str] | None, typer.Option(help="the event's property, name=value (repeatable)")
    ] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(help="the person's field if this enrolls them, name=value (repeatable)"),
    ] = None,
    event_id: Annotated[
        str | None, typer.Option(help="your id for it: sent twice, kept once")
    ] = None,
    occurred_at: Annotated[
        str | None, typer.Option(help="when it happened (ISO 8601; default: now)")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(help="JSON Lines: one event object per line, sent 1,000 per call"),
    ] = None,
    as_json: Json = False,
) -> None:
    """Record something a person did in the product (it may enroll them through a campaign's
    trigger, convert a goal, or settle a waiting condition).

    `drip track ana@example.com plan.upgraded --property plan=pro`, or
    `drip track --file events.jsonl` ({"email": ..., "event": ..., "properties": {...}} a line;
    with an "event_id" on each, running the file again records nothing twice)."""
    if file is not None:
        if email or event or property or field or event_id or occurred_at:
            raise fail("--file takes the events from the file: give no EMAIL, EVENT or options", 2)
        return _track_file(file, as_json)
    if not email or not event:
        raise fail("give EMAIL and EVENT, or --file events.jsonl", code=2)
    body: dict[str, Any] = {
        "email": email,
        "event": event,
        "properties": pairs("--property", property),
        "fields": pairs("--field", field),
    }
    if event_id is not None:
        body["event_id"] = event_id
    if occurred_at is not None:
        body["occurred_at"] = occurred_at
    with connected() as client:
        show(client.post("/api/track", body), as_json, f"{event} by {email}")


def _track_file(file: Path, as_json: bool) -> None:
    events, lines, rejected = _read_jsonl(file)
    totals: dict[str, Any] = {"accepted": 0, "duplicates": 0, "rejected": rejected}
    from cli.client import ApiError

    with connected() as client:
        for start in range(0, len(events), BATCH):
            try:
                answer = client.post("/api/track/batch", {"events": events[start : start + BATCH]})
            except ApiError as exc:
                done = totals["accepted"] + totals["duplicates"]
                raise fail(f"{exc} (stopped at line {lines[start]}; {done} events done)") from exc
            totals["accepted"] += answer["accepted"]
            totals["duplicates"] += answer["duplicates"]
            totals["rejected"] += [
                {"line": lines[start + r["index"]], "reason": r["reason"]}
                for r in answer["rejected"]
            ]
    totals["rejected"].sort(key=lambda r: r["line"])
    if as_json:
        return show(totals, True)
    out = console()
    out.print(
        f"{file}: {totals['accepted']} recorded, {totals['duplicates']} already recorded, "
        f"{len(totals['rejected'])} rejected",
        highlight=False,
    )
    if totals["rejected"]:
        show(totals["rejected"], False, "rejected lines", ["line", "reason"])
        raise typer.Exit(1)


def _read_jsonl(file: Path) -> tuple[list[Any], list[int], list[dict[str, Any]]]:
    """The file's events, each one's line number, and the lines that are no JSON object."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"{file}: {exc}", code=2) from exc
    events: list[Any] = []
    lines: list[int] = []
    rejected: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError as exc:
            rejected.append({"line": number, "reason": f"not JSON: {exc}"})
            continue
        if not isinstance(event, dict):
            rejected.append({"line": number, "reason": "not a JSON object"})
            continue
        events.append(event)
        lines.append(number)
    return events, lines, rejected


@recipient_app.command("events")
def recipient_events(
    email: Email,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="events per page")] = 100,
    cursor: Annotated[str | None, typer.Option(help="the previous page's next cursor")] = None,
    as_json: Json = False,
) -> None:
    """A person's tracked events, newest first, a page at a time."""
    with connected() as client:
        page = client.get(f"/api/recipients/{_segment(email)}/events", limit=limit, cursor=cursor)
    columns = ["occurred_at", "event", "event_id", "properties", "received_at"]
    show_page(page, as_json, f"events of {email}", columns)


@recipient_app.command("set-fields")
def recipient_set_fields(
    email: Email,
    fields: Annotated[
        list[str],
        typer.Argument(help="name=value (a JSON number or true/false is that, anything else text)"),
    ],
    as_json: Json = False,
) -> None:
    """Merge field values (a new timezone, trial_ends_at) into the person's running journeys:
    each uses them from its next step on."""
    body = {"fields": pairs("field", fields)}
    with connected() as client:
        data = client.patch(f"/api/recipients/{_segment(email)}", body)
    if as_json:
        return show(data, True)
    console().print(
        f"{email}: {data['journeys_updated']} running journeys updated", highlight=False
    )
