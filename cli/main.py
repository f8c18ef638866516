"""`drip`: the command line (installed by the package as a console script).

Processes: `drip run` (everything, as `make run`), `drip worker`, `drip api`, `drip migrate`.
Against a running API (DRIP_API_URL, key DRIP_API_KEY): every resource the API has
(`drip campaign list`, `drip recipients show 3 ana@example.com`, ...), each read with `--json`;
campaigns as code with `drip plan FILE.yaml` / `drip apply FILE.yaml`.

Starts fast (`drip --help` well under 300 ms): the HTTP client, pydantic and the commands'
helpers are imported only by the commands that use them, never the server's settings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from domain.versions import VersionPolicy  # stdlib only: cheap at start-up

if TYPE_CHECKING:
    from rich.progress import Progress

    from cli import recipients_csv
    from cli.client import ApiClient

CHUNK = 1000  # recipients per enroll call (the API takes up to this many synchronously)
SHOWN_REJECTS = 50
SETTINGS_HELP = """Settings (environment variables) of the commands that call the API:

DRIP_API_URL  the API's base URL (default: http://DRIP_API_HOST:DRIP_API_PORT)

DRIP_API_KEY  the bearer key to send (one of the server's DRIP_API_KEYS)

DRIP_API_HOST, DRIP_API_PORT  the default URL's host and port (127.0.0.1, 8000)

The process commands (run, api, worker, migrate) read the server's settings instead."""
DISTRIBUTIONS = ("drip-journeys", "drip")  # the package's name on the index, and its old one

app = typer.Typer(
    help="drip: email drip campaigns on Temporal.", epilog=SETTINGS_HELP, no_args_is_help=True
)


def _version(value: bool) -> None:
    if value:
        from importlib import metadata

        for name in DISTRIBUTIONS:
            try:
                print(f"drip {metadata.version(name)}")
                break
            except metadata.PackageNotFoundError:
                continue
        else:  # renamed again: find it by its package (slower: reads every distribution)
            name = metadata.packages_distributions().get("cli", ["drip"])[0]
            print(f"drip {metadata.version(name)}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
) -> None:
    pass


def group(name: str, help: str) -> typer.Typer:
    sub = typer.Typer(help=help, no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub


campaign_app = group("campaign", "Campaigns: list, show, status changes, clone, test-send.")
step_app = group("step", "A campaign's steps (edited only while a draft).")
template_app = group("template", "Templates: list, show, preview, delete.")
recipients_app = group("recipients", "A campaign's recipients and their journeys.")
events_app = group("events", "Engagement events: list, record one.")
suppressions_app = group("suppressions", "Addresses never mailed: list, add, remove.")
deliveries_app = group("deliveries", "Messages sent: list by status, resend an uncertain one.")
batch_app = group("batch", "Enrollment batches (CSV imports).")
versions_app = group(
    "versions", "A live campaign's versions: draft the next, edit it, preview and publish it."
)

Json = Annotated[bool, typer.Option("--json", help="print the API's JSON answer")]
CampaignId = Annotated[int, typer.Argument(help="campaign id")]
Limit = Annotated[int, typer.Option(min=1, max=1000, help="rows per page")]
Offset = Annotated[int, typer.Option(min=0, help="rows to skip")]


def console() -> Console:
    return Console()  # built per call: writes wherever stdout is now (tests capture it)


def fail(message: str, code: int = 1) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


@contextmanager
def connected() -> Iterator[ApiClient]:
    """A client of the API from the client's settings; an API error ends the command, in one
    line on stderr."""
    from pydantic import ValidationError

    from cli.client import ApiClient, ApiError
    from cli.settings import ClientSettings

    try:
        settings = ClientSettings()
    except ValidationError as exc:  # one line for a human, not a traceback
        raise fail(f"bad client setting: {_problems(exc)}") from None
    with ApiClient(settings) as client:
        try:
            yield client
        except ApiError as exc:
            raise fail(str(exc)) from None


def _problems(exc: Any) -> str:
    def name(loc: tuple[int | str, ...]) -> str:
        return "DRIP_" + ("_".join(map(str, loc)) or "api_url").upper()

    return "; ".join(f"{name(e['loc'])}: {e['msg']}" for e in exc.errors())


def show(
    data: Any, as_json: bool, title: str | None = None, columns: list[str] | None = None
) -> None:
    """The API's answer: as JSON, or a table (a list: a row each; an object: a row per field)."""
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return
    if isinstance(data, dict) and isinstance(data.get("items"), list):  # a page
        shown = len(data["items"])
        title = f"{title or ''} ({shown} of {data.get('total', shown)})".strip()
        data = data["items"]
    table = Table(title=title)
    if isinstance(data, list):
        names = columns or [k for k, v in (data[0] if data else {}).items() if _scalar(v)]
        for name in names:
            table.add_column(name)
        for row in data:
            table.add_row(*(_cell(row.get(name)) for name in names))
    else:
        table.add_column("field")
        table.add_column("value")
        for key, value in data.items():
            table.add_row(key, _cell(value))
    console().print(table)


def show_page(
    page: dict[str, Any], as_json: bool, title: str, columns: list[str] | None = None
) -> None:
    """A cursor page `{items, next_cursor}`: its rows, then how to ask for the next one."""
    if as_json:
        return show(page, True)
    show(page["items"], False, f"{title} ({len(page['items'])} shown)", columns)
    if page.get("next_cursor"):
        console().print(f"more: --cursor {page['next_cursor']}", highlight=False, markup=False)


def _segment(value: str) -> str:
    """An address as one path segment: a '/', '?' or '#' in it is part of it."""
    from urllib.parse import quote

    return quote(value, safe="@+")


def _scalar(value: Any) -> bool:
    return not isinstance(value, dict | list)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return str(value) if _scalar(value) else json.dumps(value, ensure_ascii=False)


# --- processes ---------------------------------------------------------------------------------


@app.command()
def run() -> None:
    """Run everything here: Temporal dev server, worker and API (as `make run`).

    A process that dies is started again; Ctrl-C stops all."""
    import devstack

    raise typer.Exit(devstack.main())


@app.command()
def worker() -> None:
    """Run a worker (journeys and sends); start as many as you like."""
    import asyncio

    import worker as worker_module

    asyncio.run(worker_module.main())


@app.command()
def api() -> None:
    """Serve the API with uvicorn on DRIP_API_HOST:DRIP_API_PORT."""
    import uvicorn

    from settings import Settings  # the server's settings: this command runs the server

    settings = Settings()
    uvicorn.run("api.main:app", host=settings.api_host, port=settings.api_port)


@app.command()
def migrate() -> None:
    """Bring the database (DRIP_DATABASE_URL) to the latest schema."""
    from storage import migrate as migrations

    migrations.main()


# --- campaigns ---------------------------------------------------------------------------------


@campaign_app.command("list")
def campaign_list(as_json: Json = False) -> None:
    """All campaigns, with their status and counts."""
    with connected() as client:
        show(client.get("/api/campaigns"), as_json, "campaigns")


@campaign_app.command("show")
def campaign_show(campaign: CampaignId, as_json: Json = False) -> None:
    """One campaign, its sender fields and its steps."""
    with connected() as client:
        data = client.get(f"/api/campaigns/{campaign}")
    if as_json:
        return show(data, True)
    show({k: v for k, v in data.items() if k != "steps"}, False, f"campaign {campaign}")
    show(data["steps"], False, "steps", STEP_COLUMNS)


def _set_status(campaign: int, status: str) -> None:
    with connected() as client:
        data = client.patch(f"/api/campaigns/{campaign}", {"status": status})
    console().print(f"campaign {campaign} {data['name']!r} is {data['status']}", highlight=False)


@campaign_app.command("activate")
def campaign_activate(campaign: CampaignId) -> None:
    """Start a draft campaign: enrollments begin their journeys."""
    _set_status(campaign, "active")


@campaign_app.command("pause")
def campaign_pause(campaign: CampaignId) -> None:
    """Pause an active campaign: journeys hold before their next send."""
    _set_status(campaign, "paused")


@campaign_app.command("resume")
def campaign_resume(campaign: CampaignId) -> None:
    """Resume a paused campaign."""
    _set_status(campaign, "active")


@campaign_app.command("archive")
def campaign_archive(campaign: CampaignId) -> None:
    """Archive a campaign: its running journeys end, nothing more is sent."""
    _set_status(campaign, "archived")


@campaign_app.command("clone")
def campaign_clone(campaign: CampaignId) -> None:
    """Copy a campaign and its steps into a new draft; prints the new id last."""
    with connected() as client:
        data = client.post(f"/api/campaigns/{campaign}/clone")
    console().print(f"created draft campaign {data['id']} {data['name']!r}", highlight=False)
    print(data["id"])


@campaign_app.command("delete")
def campaign_delete(campaign: CampaignId) -> None:
    """Delete a draft campaign (others are archived)."""
    with connected() as client:
        client.delete(f"/api/campaigns/{campaign}")
    console().print(f"deleted campaign {campaign}")


@campaign_app.command("test-send")
def campaign_test_send(
    campaign: CampaignId,
    email: Annotated[str, typer.Argument(help="where to send the test messages")],
    field: Annotated[list[str] | None, typer.Option(help="a template field, name=value")] = None,
    step: Annotated[int | None, typer.Option(help="only this step (id)")] = None,
    alternative: Annotated[bool, typer.Option(help="send the alternatives instead")] = False,
    as_json: Json = False,
) -> None:
    """Send the campaign's messages to one address now, outside any journey."""
    body = {"email": email, "fields": _fields(field), "step_id": step, "alternative": alternative}
    with connected() as client:
        show(client.post(f"/api/campaigns/{campaign}/test-send", body), as_json, "test send")


@campaign_app.command("create")
def campaign_create(
    file: Annotated[Path, typer.Argument(help="YAML: templates, campaign and steps")],
) -> None:
    """Create a campaign and its templates from a YAML file; prints the campaign id.

    Always creates new ones; `drip apply` makes an existing campaign match the file."""
    from cli import campaign_file
    from cli.client import ApiError

    try:
        spec, template_bodies = campaign_file.load(file)
    except campaign_file.CampaignFileError as exc:
        raise fail(str(exc), code=2) from exc
    with connected() as client:
        template_ids: dict[str, int] = {}
        try:
            for key, body in template_bodies.items():
                template_ids[key] = client.post("/api/templates", body)["id"]
            campaign = client.post(
                "/api/campaigns", {**spec.fields(), "steps": spec.step_bodies(template_ids)}
            )
        except ApiError as exc:
            for template_id in template_ids.values():  # leave nothing half-made behind
                try:
                    client.delete(f"/api/templates/{template_id}")
                except ApiError:
                    pass
            raise fail(str(exc)) from exc
        if spec.activate:
            try:
                campaign = client.patch(f"/api/campaigns/{campaign['id']}", {"status": "active"})
            except ApiError as exc:
                raise fail(f"campaign {campaign['id']} created, not activated: {exc}") from exc
    out = console()
    out.print(
        f"created campaign [bold]{campaign['id']}[/bold] {campaign['name']!r} "
        f"({campaign['status']}, {campaign['steps_count']} steps, "
        f"{len(template_ids)} templates)",
        highlight=False,
    )
    # The id alone on the last line, for scripts: `drip campaign create x.yaml | tail -1`.
    print(campaign["id"])


@app.command()
def stats(campaign: CampaignId, as_json: Json = False) -> None:
    """A campaign's recipients, completions and rates."""
    with connected() as client:
        details: dict[str, Any] = client.get(f"/api/campaigns/{campaign}")
        numbers: dict[str, Any] = client.get("/api/campaigns/stats", campaign_id=campaign)
    if as_json:
        return show(numbers, True)
    table = Table(title=f"campaign {campaign}: {details['name']} ({details['status']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in numbers.items():
        if key == "campaign_id" or isinstance(value, dict | list):
            continue  # the table shows the campaign's numbers; breakdowns are in the API
        shown = f"{value:.1%}" if key.endswith("_rate") else str(value)
        table.add_row(key.replace("_", " "), shown)
    console().print(table)


FUNNEL_COLUMNS = ["step_order", "subject", "reached", "sent", "skipped", "delivered", "opened",
                  "clicked", "bounced", "unsubscribed", "converted", "deferred_by_cap",
                  "skipped_by_cap"]  # fmt: skip


@app.command()
def funnel(campaign: CampaignId, as_json: Json = False) -> None:
    """Per step: reached, sent, opened, clicked, converted; deferred or skipped by the cap."""
    with connected() as client:
        data = client.get(f"/api/campaigns/{campaign}/funnel")
    if as_json:
        return show(data, True)
    title = (
        f"campaign {campaign}: {data['recipients']} recipients, {data['completed']} completed, "
        f"{data.get('converted', 0)} converted ({data.get('conversion_rate', 0):.1%})"
    )
    show(data["steps"], False, title, FUNNEL_COLUMNS)


SIMULATION_COLUMNS = ["at", "step_order", "decision", "variant", "subject", "reason"]


@app.command()
def simulate(
    campaign: CampaignId,
    events: Annotated[
        Path | None,
        typer.Option(help="YAML or JSON: a list of {after_hours, type, step_order?, url?, ...}"),
    ] = None,
    email: Annotated[str | None, typer.Option(help="the imaginary recipient")] = None,
    field: Annotated[list[str] | None, typer.Option(help="a recipient field, name=value")] = None,
    version: Annotated[int | None, typer.Option(help="this version (a draft one too)")] = None,
    start_at: Annotated[str | None, typer.Option(help="ISO 8601 (default: now)")] = None,
    as_json: Json = False,
) -> None:
    """Rehearse the campaign for one imaginary recipient on the time-skipping server: the
    timeline its real journey would follow with these events. Nothing is sent or stored."""
    import yaml

    injected: Any = []
    if events is not None:
        try:
            injected = yaml.safe_load(events.read_text()) or []
        except (OSError, yaml.YAMLError) as exc:
            raise fail(f"{events}: {exc}", code=2) from None
        if not isinstance(injected, list):
            raise fail(f"{events}: expected a list of events", code=2)
    body = {"events": injected, "email": email, "fields": _fields(field), "version": version,
            "start_at": start_at}  # fmt: skip
    with connected() as client:
        data = client.post(f"/api/campaigns/{campaign}/simulate", body)
    if as_json:
        return show(data, True)
    title = f"campaign {campaign}: {data['status']} at {data['ended_at']}"
    show(data["timeline"], False, title, SIMULATION_COLUMNS)


# --- steps -------------------------------------------------------------------------------------

STEP_COLUMNS = ["id", "step_order", "subject", "delay_hours", "template_id", "condition"]


@step_app.command("list")
def step_list(campaign: CampaignId, as_json: Json = False) -> None:
    """A campaign's steps in order."""
    with connected() as client:
        show(
            client.get("/api/campaigns/steps", campaign_id=campaign), as_json, "steps", STEP_COLUMNS
        )


@step_app.command("remove")
def step_remove(step: Annotated[int, typer.Argument(help="step id")]) -> None:
    """Remove a step of a draft campaign (the later ones move up)."""
    with connected() as client:
        client.delete(f"/api/campaigns/steps/{step}")
    console().print(f"removed step {step}")


@step_app.command("reorder")
def step_reorder(
    campaign: CampaignId,
    steps: Annotated[list[int], typer.Argument(help="every step id, in the new order")],
    as_json: Json = False,
) -> None:
    """Put a draft's steps in a new order."""
    with connected() as client:
        data = client.post(
            "/api/campaigns/steps/reorder", {"step_ids": steps}, campaign_id=campaign
        )
    show(data, as_json, "steps", STEP_COLUMNS)


# --- templates ---------------------------------------------------------------------------------

TemplateId = Annotated[int, typer.Argument(help="template id")]


@template_app.command("list")
def template_list(as_json: Json = False) -> None:
    """All templates."""
    with connected() as client:
        show(client.get("/api/templates"), as_json, "templates", ["id", "name", "updated_at"])


@template_app.command("show")
def template_show(template: TemplateId, as_json: Json = False) -> None:
    """One template's sources."""
    with connected() as client:
        show(client.get(f"/api/templates/{template}"), as_json, f"template {template}")


@template_app.command("preview")
def template_preview(
    template: TemplateId,
    email: Annotated[str | None, typer.Option(help="the recipient's address")] = None,
    field: Annotated[list[str] | None, typer.Option(help="a template field, name=value")] = None,
    as_json: Json = False,
) -> None:
    """Render a template for a sample recipient: prints its HTML and text."""
    body: dict[str, Any] = {"fields": _fields(field)}
    if email is not None:
        body["email"] = email
    with connected() as client:
        data = client.post(f"/api/templates/{template}/preview", body)
    if as_json:
        return show(data, True)
    print(f"--- html\n{data['html']}\n--- text\n{data['text']}")


@template_app.command("delete")
def template_delete(template: TemplateId) -> None:
    """Delete a template no step uses."""
    with connected() as client:
        client.delete(f"/api/templates/{template}")
    console().print(f"deleted template {template}")


def _fields(pairs: list[str] | None) -> dict[str, str]:
    fields = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise fail(f"--field {pair!r}: expected name=value", code=2)
        fields[name] = value
    return fields


# --- recipients and journeys -------------------------------------------------------------------

Email = Annotated[str, typer.Argument(help="the recipient's address")]


@recipients_app.command("list")
def recipients_list(
    campaign: CampaignId,
    status: Annotated[str | None, typer.Option(help="only journeys in this status")] = None,
    current_step: Annotated[
        int | None, typer.Option(help="only journeys at this step (its order; 0: before the first)")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    as_json: Json = False,
) -> None:
    """A campaign's recipients, a page at a time (who is where: --current-step 2 --status
    active)."""
    with connected() as client:
        page = client.get(
            f"/api/campaigns/{campaign}/recipients",
            status=status,
            current_step=current_step,
            limit=limit,
            offset=offset,
        )
    show(page, as_json, "recipients")


EntryOption = Annotated[
    int | None, typer.Option(min=1, help="an earlier entry into the campaign (default: latest)")
]


@recipients_app.command("show")
def recipients_show(
    campaign: CampaignId, email: Email, entry: EntryOption = None, as_json: Json = False
) -> None:
    """One recipient's journey: status, what it waits for, what each step decided and why."""
    from cli import journeys

    with connected() as client:
        data = client.get(f"/api/campaigns/{campaign}/recipients/{_segment(email)}", entry=entry)
    if as_json:
        return show(data, True)
    journeys.print_journey(console(), data)


@recipients_app.command("remove")
def recipients_remove(
    campaign: CampaignId, email: Email, entry: EntryOption = None, as_json: Json = False
) -> None:
    """Take a recipient out of a campaign: the journey ends, nothing more is sent."""
    with connected() as client:
        data = client.delete(f"/api/campaigns/{campaign}/recipients/{_segment(email)}", entry=entry)
    show(data, as_json, f"removed {email} from campaign {campaign}")


@app.command()
def enroll(
    campaign: CampaignId,
    file: Annotated[Path, typer.Argument(help="CSV with an `email` column; others are fields")],
    chunk_size: Annotated[int, typer.Option(min=1, max=CHUNK, help="rows per API call")] = CHUNK,
) -> None:
    """Enroll the recipients of a CSV file into a campaign.

    Posted in chunks with a progress bar; ends with a summary and the rejected rows."""
    from cli import recipients_csv
    from cli.client import ApiError

    try:
        rows, local_rejects = recipients_csv.read(file)
    except recipients_csv.RecipientsFileError as exc:
        raise fail(str(exc), code=2) from exc
    totals = {"enrolled": 0, "already_enrolled": 0}
    rejects: list[tuple[int | None, str, str]] = [
        (r.line, r.email, r.reason) for r in local_rejects
    ]
    out = console()
    with connected() as client, _progress(out) as progress:
        task = progress.add_task("enrolling", total=len(rows))
        for start in range(0, len(rows), chunk_size):
            chunk = rows[start : start + chunk_size]
            try:
                result = client.post(
                    f"/api/campaigns/{campaign}/recipients",
                    {"recipients": [row.recipient for row in chunk]},
                )
            except ApiError as exc:
                done = totals["enrolled"] + totals["already_enrolled"]
                raise fail(f"{exc} (stopped at line {chunk[0].line}; {done} rows done)") from exc
            totals["enrolled"] += result["enrolled"]
            totals["already_enrolled"] += result["already_enrolled"]
            rejects += _match_lines(chunk, result["rejected"])
            progress.advance(task, len(chunk))
    _summary(out, len(rows) + len(local_rejects), totals, rejects)


def _progress(out: Console) -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
    )


def _match_lines(
    chunk: list[recipients_csv.Row], rejected: list[dict[str, str]]
) -> list[tuple[int | None, str, str]]:
    """The API names a rejected row by address (as sent, or normalised): find its line."""
    lines: dict[str, int] = {}
    for row in chunk:
        email = row.recipient["email"]
        lines.setdefault(email, row.line)
        lines.setdefault(email.strip().lower(), row.line)
    return [
        (lines.get(r["email"], lines.get(r["email"].lower())), r["email"], r["reason"])
        for r in rejected
    ]


def _summary(
    out: Console,
    total: int,
    totals: dict[str, int],
    rejects: list[tuple[int | None, str, str]],
) -> None:
    table = Table(title="enrollment", show_header=False)
    table.add_row("rows", str(total))
    table.add_row("enrolled", str(totals["enrolled"]))
    table.add_row("already enrolled", str(totals["already_enrolled"]))
    table.add_row("rejected", str(len(rejects)))
    out.print(table)
    if not rejects:
        return
    listing = Table(title="rejected rows")
    listing.add_column("line", justify="right")
    listing.add_column("email")
    listing.add_column("reason")
    ordered = sorted(rejects, key=lambda r: (r[0] is None, r[0] or 0))
    for line, email, reason in ordered[:SHOWN_REJECTS]:
        listing.add_row(str(line) if line else "?", email or "(empty)", reason)
    out.print(listing)
    if len(rejects) > SHOWN_REJECTS:
        out.print(f"... and {len(rejects) - SHOWN_REJECTS} more")


@batch_app.command("import")
def batch_import(
    campaign: CampaignId,
    file: Annotated[Path, typer.Argument(help="CSV with an `email` column; others are fields")],
    as_json: Json = False,
) -> None:
    """Upload a CSV of any size to an active campaign; the API enrolls it in the background
    (follow it with `drip batch status ID`). Prints the batch id last."""
    if not file.is_file():
        raise fail(f"{file}: no such file", code=2)
    with connected() as client:
        data = client.upload(f"/api/campaigns/{campaign}/recipients/import", file)
    show(data, as_json, "batch accepted")
    if not as_json:
        print(data["batch_id"])


@batch_app.command("status")
def batch_status(
    batch: Annotated[int, typer.Argument(help="batch id")],
    rejected: Annotated[int, typer.Option(min=0, max=1000, help="rejected rows to list")] = 100,
    as_json: Json = False,
) -> None:
    """An enrollment batch's progress: accepted, processed, enrolled, rejected rows."""
    with connected() as client:
        data = client.get(f"/api/enrollment-batches/{batch}", rejected_limit=rejected)
    if as_json:
        return show(data, True)
    listed = data.get("rejected_rows") or data.get("rejected_items")
    show({k: v for k, v in data.items() if _scalar(v)}, False, f"batch {batch}")
    if listed:
        show(listed, False, "rejected rows")


# --- events, suppressions, deliveries, erasure -------------------------------------------------


@events_app.command("list")
def events_list(
    email: Annotated[str | None, typer.Option(help="of this address")] = None,
    campaign: Annotated[int | None, typer.Option(help="of this campaign")] = None,
    delivery: Annotated[str | None, typer.Option(help="of this delivery")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    as_json: Json = False,
) -> None:
    """Engagement events, newest first."""
    with connected() as client:
        data = client.get(
            "/api/events",
            email=email,
            campaign_id=campaign,
            delivery_id=delivery,
            limit=limit,
            offset=offset,
        )
    show(data, as_json, "events")


@events_app.command("send")
def events_send(
    delivery: Annotated[str, typer.Argument(help="the delivery's id")],
    type: Annotated[str, typer.Argument(help="delivered, opened, clicked, bounced, ...")],
    url: Annotated[str | None, typer.Option(help="the link, for a click")] = None,
    event_id: Annotated[
        str | None, typer.Option(help="your id for it: sent twice, kept once")
    ] = None,
    as_json: Json = False,
) -> None:
    """Record an event for a delivery (as a provider's webhook would)."""
    body = {"delivery_id": delivery, "type": type, "url": url, "event_id": event_id}
    with connected() as client:
        data = client.post("/api/events", {k: v for k, v in body.items() if v is not None})
    show(data, as_json, "event")


@suppressions_app.command("list")
def suppressions_list(
    email: Annotated[str | None, typer.Option(help="only this address")] = None,
    reason: Annotated[str | None, typer.Option(help="only this reason")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    as_json: Json = False,
) -> None:
    """Suppressed addresses."""
    with connected() as client:
        data = client.get(
            "/api/suppressions", email=email, reason=reason, limit=limit, offset=offset
        )
    show(data, as_json, "suppressions")


@suppressions_app.command("add")
def suppressions_add(
    email: Email,
    reason: Annotated[str | None, typer.Option(help="why (default: manual)")] = None,
    as_json: Json = False,
) -> None:
    """Never mail an address again; its running journeys end."""
    body = {"email": email, **({"reason": reason} if reason else {})}
    with connected() as client:
        show(client.post("/api/suppressions", body), as_json, "suppressed")


@suppressions_app.command("remove")
def suppressions_remove(email: Email) -> None:
    """Allow mail to an address again."""
    with connected() as client:
        client.delete(f"/api/suppressions/{_segment(email)}")
    console().print(f"{email} is no longer suppressed", highlight=False)


@deliveries_app.command("list")
def deliveries_list(
    status: Annotated[
        str, typer.Option(help="uncertain, failed, sent, bounced, ...")
    ] = "uncertain",
    campaign: Annotated[int | None, typer.Option(help="of this campaign")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    as_json: Json = False,
) -> None:
    """Deliveries in one status (by default: uncertain, those a crash left unconfirmed)."""
    with connected() as client:
        data = client.get(
            "/api/deliveries", status=status, campaign_id=campaign, limit=limit, offset=offset
        )
    show(data, as_json, f"{status} deliveries")


@deliveries_app.command("resend")
def deliveries_resend(
    delivery: Annotated[str, typer.Argument(help="the delivery's id")], as_json: Json = False
) -> None:
    """Send an uncertain delivery again (after checking it did not arrive)."""
    with connected() as client:
        show(client.post(f"/api/deliveries/{_segment(delivery)}/resend"), as_json, "resent")


@app.command()
def erase(
    email: Email,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
    as_json: Json = False,
) -> None:
    """Erase everything drip holds about an address (GDPR): journeys, deliveries, events."""
    if not yes and not typer.confirm(f"erase everything about {email}?"):
        raise typer.Exit(1)
    with connected() as client:
        show(client.delete(f"/api/recipients/{_segment(email)}"), as_json, f"erased {email}")


# --- versions of a live campaign ---------------------------------------------------------------

VersionNumber = Annotated[int, typer.Argument(help="version number")]
Policy = Annotated[
    VersionPolicy,
    typer.Option(
        "--policy",
        help="what the running journeys do: stay on theirs, migrate at their next step, exit",
    ),
]


@versions_app.command("list")
def versions_list(campaign: CampaignId, as_json: Json = False) -> None:
    """The campaign's versions (draft, live, retired) and how many journeys run on each."""
    with connected() as client:
        data = client.get(f"/api/campaigns/{campaign}/versions", limit=1000)
    show(data, as_json, f"versions of campaign {campaign}")


@versions_app.command("show")
def versions_show(campaign: CampaignId, number: VersionNumber, as_json: Json = False) -> None:
    """One version with its steps."""
    with connected() as client:
        data = client.get(f"/api/campaigns/{campaign}/versions/{number}")
    if as_json:
        show(data, True)
        return
    show({k: v for k, v in data.items() if k != "steps"}, False, f"version {number}")
    show(data["steps"], False, "steps")


@versions_app.command("draft")
def versions_draft(campaign: CampaignId) -> None:
    """Draft the next version, a copy of the live one; prints its number last."""
    with connected() as client:
        data = client.post(f"/api/campaigns/{campaign}/versions")
    console().print(f"drafted version {data['version']} of campaign {campaign}", highlight=False)
    print(data["version"])


@versions_app.command("edit")
def versions_edit(
    campaign: CampaignId,
    number: VersionNumber,
    file: Annotated[Path, typer.Argument(help="the definition (JSON): {steps: [...], ...}")],
    as_json: Json = False,
) -> None:
    """Replace a draft's definition with FILE's: a step with an existing `id` is that step,
    one without is new, one left out is removed."""
    try:
        body = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise fail(f"{file}: {exc}", code=2) from exc
    with connected() as client:
        data = client.put(f"/api/campaigns/{campaign}/versions/{number}", body)
    if as_json:
        show(data, True)
        return
    show(data["steps"], False, f"version {number} (draft)")


@versions_app.command("publish")
def versions_publish(
    campaign: CampaignId,
    number: VersionNumber,
    policy: Policy,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only show the impact")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
    as_json: Json = False,
) -> None:
    """Show what publishing would do to the journeys in flight, then (asked, or --yes)
    publish: the draft becomes the version new enrollments start on."""
    path = f"/api/campaigns/{campaign}/versions/{number}/publish"
    with connected() as client:
        impact = client.post(path, {"policy": policy.value, "dry_run": True})
        if (dry_run or not yes) and as_json:
            show(impact, True)
        elif dry_run or not yes:
            _show_impact(impact)
        if dry_run:
            return
        if not yes and not typer.confirm(f"publish version {number} with {policy.value}?"):
            raise typer.Exit(1)
        data = client.post(path, {"policy": policy.value})
    if as_json and yes:
        show(data, True)
        return
    console().print(f"version {number} of campaign {campaign} is live ({policy.value})")


def _show_impact(impact: dict[str, Any]) -> None:
    out = console()
    out.print(
        f"{impact['in_flight']} journeys in flight; {impact['exits']} would exit", highlight=False
    )
    if impact["waiting_before"]:
        show(impact["waiting_before"], False, "waiting before each step")
    if impact["moves"]:
        show(impact["moves"], False, "where they go (to_step empty: they finish)")
    if impact["template_changes"]:
        show(impact["template_changes"], False, "templates edited since published (sent as now)")


# --- campaigns as code -------------------------------------------------------------------------

CampaignFileArg = Annotated[Path, typer.Argument(help="the campaign file (YAML)")]


@app.command()
def schema() -> None:
    """Print the campaign file's JSON Schema (for editor completion)."""
    from cli import campaign_file

    print(campaign_file.json_schema(), end="")


@app.command()
def plan(file: CampaignFileArg) -> None:
    """Print what `drip apply FILE` would change; exit 2 if it cannot be applied."""
    with _planned(file) as (the_plan, _):
        console().print("\n".join(the_plan.describe()), highlight=False, markup=False)
        if the_plan.blocked:
            raise typer.Exit(2)


@app.command("apply")
def apply_file(file: CampaignFileArg) -> None:
    """Make the campaign and its templates what FILE says (creating them if need be).

    Idempotent: applying the same file again changes nothing. A live (active or paused)
    campaign's steps cannot change: then nothing is applied. Prints the campaign id last."""
    from cli import apply

    with _planned(file) as (the_plan, bodies), connected() as client:
        out = console()
        if the_plan.blocked:
            raise fail(the_plan.blocked, code=2)
        out.print("\n".join(the_plan.describe()), highlight=False, markup=False)
        campaign_id = apply.apply(client, the_plan, bodies)
    print(campaign_id)


@contextmanager
def _planned(file: Path) -> Iterator[tuple[Any, dict[str, dict[str, Any]]]]:
    from cli import apply, campaign_file

    try:
        spec, bodies = campaign_file.load(file)
    except campaign_file.CampaignFileError as exc:
        raise fail(str(exc), code=2) from exc
    with connected() as client:
        try:
            the_plan = apply.make_plan(client, spec, bodies)
        except apply.PlanError as exc:
            raise fail(str(exc), code=2) from exc
    yield the_plan, bodies


# Commands kept in their own modules register on `app` when imported (typer and rich only).
from cli import frequency_cap, tracked_events, webhook_subscriptions  # noqa: E402, F401


def main() -> None:
    app(prog_name="drip")


if __name__ == "__main__":  # `python -m cli.main`: as `cli.main`, whose app the modules extend
    import cli.main

    cli.main.main()
