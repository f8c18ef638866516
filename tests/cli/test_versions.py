"""`drip versions`: draft the next version of a live campaign, edit it from a JSON file, see
the publish's impact, and publish it (asked first, or --yes)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.cli.conftest import drip


async def test_draft_edit_preview_and_publish_from_the_command_line(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    template = (await api.post("/api/templates", json={"name": "t", "html": "<p>Hi</p>"})).json()
    created = await api.post("/api/campaigns", json={"name": "Live", "steps": [
        {"subject": "One", "delay_hours": 0, "template_id": template["id"]},
        {"subject": "Two", "delay_hours": 24, "template_id": template["id"]},
    ]})  # fmt: skip
    cid, ids = created.json()["id"], [s["id"] for s in created.json()["steps"]]
    assert (await api.patch(f"/api/campaigns/{cid}", json={"status": "active"})).status_code == 200

    drafted = await drip(api, "versions", "draft", str(cid))
    assert drafted.exit_code == 0, drafted.output
    assert drafted.stdout.strip().splitlines()[-1] == "2"
    again = await drip(api, "versions", "draft", str(cid))
    assert again.exit_code == 1 and "already has a draft" in again.output

    definition = tmp_path / "v2.json"
    definition.write_text(json.dumps({"steps": [
        {"id": ids[0], "subject": "One, fixed", "delay_hours": 0, "template_id": template["id"]},
    ]}))  # fmt: skip
    edited = await drip(api, "versions", "edit", str(cid), "2", str(definition), "--json")
    assert edited.exit_code == 0, edited.output
    assert [s["subject"] for s in json.loads(edited.stdout)["steps"]] == ["One, fixed"]

    preview = await drip(api, "versions", "publish", str(cid), "2", "--policy", "exit", "--dry-run")
    assert preview.exit_code == 0, preview.output
    assert "0 journeys in flight; 0 would exit" in preview.stdout
    refused = await drip(api, "versions", "publish", str(cid), "2", "--policy", "stay", stdin="n\n")
    assert refused.exit_code == 1
    assert (await api.get(f"/api/campaigns/{cid}/versions/2")).json()["status"] == "draft"
    published = await drip(api, "versions", "publish", str(cid), "2", "--policy", "stay", "--yes")
    assert published.exit_code == 0, published.output
    assert "version 2 of campaign" in published.stdout and "is live (stay)" in published.stdout

    listed = await drip(api, "versions", "list", str(cid), "--json")
    items = json.loads(listed.stdout)["items"]
    assert [(v["version"], v["status"]) for v in items] == [(1, "retired"), (2, "live")]
    shown = await drip(api, "versions", "show", str(cid), "2")
    assert "One, fixed" in shown.stdout and "live" in shown.stdout
    steps = (await api.get("/api/campaigns/steps", params={"campaign_id": cid})).json()
    assert [s["subject"] for s in steps] == ["One, fixed"]
