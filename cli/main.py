"""`drip`: the command line (installed by the package as a console script).

Processes: `drip run` (everything, as `make run`), `drip worker`, `drip api`, `drip migrate`.
Against a running API (DRIP_API_URL, key DRIP_API_KEY): `drip campaign create FILE.yaml`,
`drip enroll CAMPAIGN recipients.csv`, `drip stats CAMPAIGN`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli import campaign_file, recipients_csv
from cli.client import ApiClient, ApiError
from cli.settings import ClientSettings

CHUNK = 1000  # recipients per enroll call (the API takes up to this many synchronously)
SHOWN_REJECTS = 50

app = typer.Typer(help="drip: email drip campaigns on Temporal.", no_args_is_help=True)
campaign_app = typer.Typer(help="Campaigns.", no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")


def console() -> Console:
    return Console()  # built per call: writes wherever stdout is now (tests capture it)


def fail(message: str, code: int = 1) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def api_client() -> ApiClient:
    try:
        settings = ClientSettings()
    except ValidationError as exc:  # one line for a human, not a traceback
        raise fail(f"bad client setting: {_problems(exc)}") from None
    return ApiClient(settings)


def _problems(exc: ValidationError) -> str:
    def name(loc: tuple[int | str, ...]) -> str:
        return "DRIP_" + ("_".join(map(str, loc)) or "api_url").upper()

    return "; ".join(f"{name(e['loc'])}: {e['msg']}" for e in exc.errors())


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


# --- against the API ---------------------------------------------------------------------------


@campaign_app.command("create")
def campaign_create(
    file: Annotated[Path, typer.Argument(help="YAML: templates, campaign and steps")],
) -> None:
    """Create a campaign and its templates from a YAML file; prints the campaign id."""
    try:
        spec = campaign_file.load(file)
    except campaign_file.CampaignFileError as exc:
        raise fail(str(exc), code=2) from exc
    with api_client() as client:
        template_ids: dict[str, int] = {}
        try:
            for key, body in spec.templates.items():
                template_ids[key] = client.post("/api/templates", body)["id"]
            campaign = client.post("/api/campaigns", spec.campaign_body(template_ids))
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
def enroll(
    campaign: Annotated[int, typer.Argument(help="campaign id")],
    file: Annotated[Path, typer.Argument(help="CSV with an `email` column; others are fields")],
    chunk_size: Annotated[int, typer.Option(min=1, max=CHUNK, help="rows per API call")] = CHUNK,
) -> None:
    """Enroll the recipients of a CSV file into a campaign.

    Posted in chunks with a progress bar; ends with a summary and the rejected rows."""
    try:
        rows, local_rejects = recipients_csv.read(file)
    except recipients_csv.RecipientsFileError as exc:
        raise fail(str(exc), code=2) from exc
    totals = {"enrolled": 0, "already_enrolled": 0}
    rejects: list[tuple[int | None, str, str]] = [
        (r.line, r.email, r.reason) for r in local_rejects
    ]
    out = console()
    with api_client() as client, _progress(out) as progress:
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


@app.command()
def stats(campaign: Annotated[int, typer.Argument(help="campaign id")]) -> None:
    """A campaign's recipients, completions and rates."""
    with api_client() as client:
        try:
            details: dict[str, Any] = client.get(f"/api/campaigns/{campaign}")
            numbers: dict[str, Any] = client.get("/api/campaigns/stats", campaign_id=campaign)
        except ApiError as exc:
            raise fail(str(exc)) from exc
    table = Table(title=f"campaign {campaign}: {details['name']} ({details['status']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in numbers.items():
        if key == "campaign_id" or isinstance(value, dict | list):
            continue  # the table shows the campaign's numbers; breakdowns are in the API
        shown = f"{value:.1%}" if key.endswith("_rate") else str(value)
        table.add_row(key.replace("_", " "), shown)
    console().print(table)


def main() -> None:
    app(prog_name="drip")


if __name__ == "__main__":
    main()
