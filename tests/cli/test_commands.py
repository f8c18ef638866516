"""Every resource of the API from the command line: `--json` prints the API's answer as is,
the tables show the same rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.cli.conftest import drip
from tests.conftest import unique_domain


async def read(api: httpx.AsyncClient, *args: str) -> Any:
    result = await drip(api, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def test_every_resource_from_the_command_line(api: httpx.AsyncClient, tmp_path: Path) -> None:
    template = (
        await api.post("/api/templates", json={"name": "t", "html": "<p>Hi {{ first_name }}</p>"})
    ).json()
    created = await api.post(
        "/api/campaigns",
        json={
            "name": "Everything",
            "steps": [
                {"subject": "One", "delay_hours": 24, "template_id": template["id"]},
                {"subject": "Two", "delay_hours": 24, "template_id": template["id"]},
            ],
        },
    )
    cid = created.json()["id"]

    # Campaigns, steps, templates: --json is the API's answer; tables show the rows.
    assert await read(api, "campaign", "list") == (await api.get("/api/campaigns")).json()
    listed = await drip(api, "campaign", "list")
    assert "Everything" in listed.stdout and "draft" in listed.stdout
    assert await read(api, "campaign", "show", str(cid)) == created.json()
    shown = await drip(api, "campaign", "show", str(cid))
    assert "One" in shown.stdout and "Two" in shown.stdout, shown.output
    steps = await read(api, "step", "list", str(cid))
    assert [s["subject"] for s in steps] == ["One", "Two"]
    assert await read(api, "template", "list") == [template]
    assert await read(api, "template", "show", str(template["id"])) == template
    preview = await read(
        api, "template", "preview", str(template["id"]), "--field", "first_name=Ana"
    )
    assert preview["html"].startswith("<p>Hi Ana</p>")
    assert (
        "--- html\n<p>Hi Ana</p>"
        in (
            await drip(api, "template", "preview", str(template["id"]), "--field", "first_name=Ana")
        ).stdout
    )

    # A clone is a draft: its steps reorder and go; then it is deleted.
    cloned = await drip(api, "campaign", "clone", str(cid))
    assert cloned.exit_code == 0, cloned.output
    copy = int(cloned.stdout.splitlines()[-1])
    one, two = (s["id"] for s in await read(api, "step", "list", str(copy)))
    reordered = await read(api, "step", "reorder", str(copy), str(two), str(one))
    assert [s["subject"] for s in reordered] == ["Two", "One"]
    assert (await drip(api, "step", "remove", str(one))).exit_code == 0
    assert [s["id"] for s in await read(api, "step", "list", str(copy))] == [two]
    assert (await drip(api, "campaign", "delete", str(copy))).exit_code == 0
    assert (await api.get(f"/api/campaigns/{copy}")).status_code == 404

    # Status changes.
    for command, status in (("activate", "active"), ("pause", "paused"), ("resume", "active")):
        result = await drip(api, "campaign", command, str(cid))
        assert result.stdout == f"campaign {cid} 'Everything' is {status}\n", result.output

    # Suppressions.
    domain = unique_domain()
    gone = f"gone@{domain}"
    added = await read(api, "suppressions", "add", gone, "--reason", "complaint")
    assert (added["email"], added["reason"]) == (gone, "complaint")
    page = await read(api, "suppressions", "list", "--email", gone)
    assert [s["email"] for s in page["items"]] == [gone]
    assert (await drip(api, "suppressions", "remove", gone)).exit_code == 0
    assert (await read(api, "suppressions", "list", "--email", gone))["items"] == []

    # Recipients and journeys (no worker runs: journeys are read from the database).
    ana, ben = f"ana@{domain}", f"ben@{domain}"
    enrolled = await api.post(
        f"/api/campaigns/{cid}/recipients",
        json={"recipients": [{"email": ana, "fields": {"first_name": "Ana"}}, {"email": ben}]},
    )
    assert enrolled.status_code in (200, 201, 202), enrolled.text
    page = await read(api, "recipients", "list", str(cid), "--limit", "1")
    assert (page["total"], [r["email"] for r in page["items"]]) == (2, [ana])
    table = await drip(api, "recipients", "list", str(cid))
    assert "recipients (2 of 2)" in table.stdout and ben in table.stdout, table.output
    at_first = await read(api, "recipients", "list", str(cid), "--current-step", "1")
    assert at_first["total"] == 0  # nothing decided yet: both are at step 0
    waiting = await read(
        api, "recipients", "list", str(cid), "--current-step", "0", "--status", "active"
    )
    assert waiting["total"] == 2
    journey = await read(api, "recipients", "show", str(cid), ana)
    assert (journey["email"], journey["fields"]) == (ana, {"first_name": "Ana"})
    removed = await read(api, "recipients", "remove", str(cid), ben)
    assert removed["email"] == ben

    # Events, deliveries, funnel, stats: nothing was sent.
    assert await read(api, "events", "list", "--campaign", str(cid)) == []
    deliveries = await read(api, "deliveries", "list", "--campaign", str(cid))
    assert deliveries["items"] == []
    assert (
        await read(api, "funnel", str(cid))
        == (await api.get(f"/api/campaigns/{cid}/funnel")).json()
    )
    funnel = await drip(api, "funnel", str(cid))
    assert "One" in funnel.stdout and "Two" in funnel.stdout, funnel.output
    stats = await read(api, "stats", str(cid))
    assert stats["recipients"] == 2

    # A CSV import is a batch, followed by its status.
    csv_file = tmp_path / "big.csv"
    csv_file.write_text(f"email,first_name\ncy@{domain},Cy\n,Nobody\n")
    imported = await drip(api, "batch", "import", str(cid), str(csv_file))
    assert imported.exit_code == 0, imported.output
    batch = int(imported.stdout.splitlines()[-1])
    progress = await read(api, "batch", "status", str(batch))
    assert (progress["id"], progress["campaign_id"], progress["filename"]) == (
        batch,
        cid,
        "big.csv",
    )
    assert progress["accepted"] == 2

    # Erasure, asked for or confirmed.
    asked = await drip(api, "erase", ana, stdin="n\n")
    assert asked.exit_code == 1
    erased = await read(api, "erase", ana, "--yes")
    assert (erased["email"], erased["found"]) == (ana, True)
    assert (await api.get(f"/api/campaigns/{cid}/recipients/{ana}")).status_code == 404

    archived = await drip(api, "campaign", "archive", str(cid))
    assert archived.stdout == f"campaign {cid} 'Everything' is archived\n", archived.output


async def test_a_refusal_is_one_line_naming_the_problem(api: httpx.AsyncClient) -> None:
    missing = await drip(api, "campaign", "show", "999999")
    assert missing.exit_code == 1
    # (In this process the stderr also holds the API's own logs.)
    errors = [line for line in missing.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: GET /api/campaigns/999999: 404 campaign 999999 not found"]
    draft = (await api.post("/api/campaigns", json={"name": "Empty", "steps": []})).json()["id"]
    refused = await drip(api, "campaign", "activate", str(draft))
    assert refused.exit_code == 1
    assert f"409 campaign {draft} has no steps to run" in refused.stderr
    bad_field = await drip(api, "template", "preview", "1", "--field", "nameonly")
    assert bad_field.exit_code == 2 and "expected name=value" in bad_field.stderr


async def test_an_address_with_a_slash_is_one_recipient(api: httpx.AsyncClient) -> None:
    template = (await api.post("/api/templates", json={"name": "t", "html": "hi"})).json()["id"]
    steps = [{"subject": "One", "delay_hours": 24, "template_id": template}]
    cid = (await api.post("/api/campaigns", json={"name": "S", "steps": steps})).json()["id"]
    assert (await drip(api, "campaign", "activate", str(cid))).exit_code == 0
    odd = f"a/b?c#d@{unique_domain()}"
    enrolled = await api.post(
        f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": odd}]}
    )
    assert enrolled.json()["enrolled"] == 1, enrolled.text
    assert (await read(api, "recipients", "show", str(cid), odd))["email"] == odd
    assert (await read(api, "recipients", "remove", str(cid), odd))["email"] == odd
