"""A journey (`GET /api/campaigns/{id}/recipients/{email}`) printed for a human: where it is,
what it waits for and why, and each decided step with its reason."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_journey(out: Console, journey: dict[str, Any]) -> None:
    status = journey["status"] + (
        f" ({journey['status_reason']})" if journey.get("status_reason") else ""
    )
    lines = [
        f"journey of {journey['email']} in campaign {journey['campaign_id']}, "
        f"entry {journey['entry']}: {status}" + (", paused" if journey.get("paused") else ""),
        f"enrolled {journey['enrolled_at']}"
        + (f", finished {journey['finished_at']}" if journey.get("finished_at") else "")
        + f"; at step {journey['current_step']}",
    ]
    waiting = journey.get("waiting_for")
    if waiting:
        when = f"until {waiting['until']}" if waiting.get("until") else "until told"
        zone = f", read in {waiting['zone']}" if waiting.get("zone") else ""
        lines.append(f"waiting: {waiting['reason']} ({waiting['kind']}, {when}{zone})")
    conversion = journey.get("conversion")
    if conversion:
        by = f"step {conversion['step_order']}" if conversion.get("step_order") else "no message"
        lines.append(
            f"converted {conversion['occurred_at']} ({conversion['event_id']}, after {by})"
        )
    if journey.get("fields"):
        lines.append("fields: " + ", ".join(f"{k}={v}" for k, v in journey["fields"].items()))
    out.print("\n".join(lines), highlight=False, markup=False)
    if not journey.get("steps"):
        return
    table = Table(title="steps decided")
    for name in ("step", "decision", "reason", "delivery", "opened", "clicked"):
        table.add_column(name)
    for step in journey["steps"]:
        evidence = "; ".join(f"{e['type']} {e['event_id']} at {e['at']}" for e in step["evidence"])
        reason = step["reason"] + (f" [{evidence}]" if evidence else "")
        table.add_row(
            str(step["step_order"]),
            step["decision"],
            reason,
            step.get("delivery_status") or "",
            "yes" if step.get("opened") else "",
            "yes" if step.get("clicked") else "",
        )
    out.print(table)
