"""`drip frequency-cap show|set|clear`: at most N messages to one address in any H hours,
across campaigns (docs/features.md#frequency-caps). Registered on the main app when
cli/main.py imports this module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from cli.main import Json, connected, console, group, show

cap_app = group("frequency-cap", "The frequency cap across campaigns: show, set, clear.")
PATH = "/api/settings/frequency-cap"


def _unless_none(call: Callable[[], Any]) -> Any:
    """The API's answer, or None when no cap is set (its 404)."""
    from cli.client import ApiError

    try:
        return call()
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def _describe(cap: dict[str, Any]) -> str:
    return (
        f"frequency cap: at most {cap['max_messages']} messages to one address in any "
        f"{cap['per_hours']:g} hours (set {cap['updated_at']})"
    )


@cap_app.command("show")
def cap_show(as_json: Json = False) -> None:
    """The cap in force (`null` with --json when none is set)."""
    with connected() as client:
        cap = _unless_none(lambda: client.get(PATH))
    if as_json:
        return show(cap, True)
    console().print(_describe(cap) if cap else "no frequency cap is set", highlight=False)


@cap_app.command("set")
def cap_set(
    max_messages: Annotated[int, typer.Option("--max", min=1, help="messages at most")],
    per_hours: Annotated[float, typer.Option(min=0, help="in any window of this many hours")],
    as_json: Json = False,
) -> None:
    """Set (or change) the cap: campaigns marked `frequency_cap: exempt` and test sends do not
    count."""
    with connected() as client:
        cap = client.put(PATH, {"max_messages": max_messages, "per_hours": per_hours})
    if as_json:
        return show(cap, True)
    console().print(_describe(cap), highlight=False)


@cap_app.command("clear")
def cap_clear() -> None:
    """Remove the cap (nothing to remove is not an error)."""
    with connected() as client:
        removed = _unless_none(lambda: client.delete(PATH) or True)
    console().print("frequency cap removed" if removed else "no frequency cap was set")
