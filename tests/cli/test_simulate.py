"""`drip simulate CAMPAIGN --events FILE` prints the rehearsal's timeline (the API's answer)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.cli.conftest import drip
from tests.support.factories import make_campaign, make_template


async def test_simulate_prints_the_timeline_with_the_events_of_a_file(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    template = await make_template(api)
    campaign = await make_campaign(
        api,
        [
            {"subject": "Welcome", "delay_hours": 0, "template_id": template},
            {
                "subject": "Follow-up",
                "delay_hours": 48,
                "template_id": template,
                "condition": {"type": "clicked", "step_order": 1},
            },
        ],  # fmt: skip
        activate=False,
    )
    events = tmp_path / "events.yaml"
    events.write_text("- {after_hours: 2, type: click, step_order: 1, url: https://x.test/a}\n")

    shown = await drip(api, "simulate", str(campaign["id"]), "--events", str(events))
    assert shown.exit_code == 0, shown.output
    assert "completed" in shown.stdout
    assert "Welcome" in shown.stdout and "Follow-up" in shown.stdout
    as_json = await drip(api, "simulate", str(campaign["id"]), "--events", str(events), "--json")
    timeline = json.loads(as_json.stdout)["timeline"]
    assert [(e["subject"], e["decision"]) for e in timeline] == [
        ("Welcome", "sent"), ("Follow-up", "sent"),
    ]  # fmt: skip
    unclicked = json.loads((await drip(api, "simulate", str(campaign["id"]), "--json")).stdout)
    assert [e["decision"] for e in unclicked["timeline"]] == ["sent", "skipped"]

    events.write_text("- {after_hours: -1, type: open, step_order: 1}\n")
    refused = await drip(api, "simulate", str(campaign["id"]), "--events", str(events))
    assert refused.exit_code != 0
    assert "after_hours" in refused.output
