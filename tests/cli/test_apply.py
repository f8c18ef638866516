"""`drip plan` / `drip apply`: campaigns as code against the real API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy.engine import Engine
from sqlmodel import Session

from cli import campaign_file
from storage.models import Enrollment
from tests.cli.conftest import drip

ROOT = Path(__file__).resolve().parents[2]

V1: dict[str, Any] = {
    "name": "Declared",
    "from_email": "hello@drip.example.com",
    "templates": {
        "welcome": {"name": "Declared welcome", "html_file": "welcome.html", "text": "Hi!"},
        "nudge": {"html": "<p>Still there?</p>"},
    },
    "steps": [
        {"subject": "Welcome", "delay_hours": 0, "template": "welcome"},
        {
            "subject": "Did you see this?",
            "delay_hours": 48,
            "template": "nudge",
            "condition": {"type": "not_opened", "step_order": 1},
            "alternative": {"subject": "Thanks for opening", "template": "welcome"},
        },
        {"subject": "Last one", "delay_hours": 24, "template": "nudge"},
    ],
}


def write(tmp_path: Path, spec: dict[str, Any]) -> Path:
    (tmp_path / "welcome.html").write_text("<p>Welcome aboard.</p>")
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


async def state(api: httpx.AsyncClient) -> tuple[list[Any], list[Any]]:
    """Every campaign (with its steps) and every template the API holds."""
    campaigns = [
        (await api.get(f"/api/campaigns/{c['id']}")).json()
        for c in (await api.get("/api/campaigns")).json()
    ]
    return campaigns, (await api.get("/api/templates")).json()


async def test_apply_creates_then_changes_nothing(api: httpx.AsyncClient, tmp_path: Path) -> None:
    path = write(tmp_path, V1)

    plan = await drip(api, "plan", str(path))
    assert plan.exit_code == 0, plan.output
    assert plan.stdout.splitlines() == [
        "+ template 'Declared welcome' created",
        "+ template 'nudge' created",
        "+ campaign 'Declared' created with 3 steps",
    ]
    assert await state(api) == ([], []), "plan changes nothing"

    applied = await drip(api, "apply", str(path))
    assert applied.exit_code == 0, applied.output
    campaign_id = int(applied.stdout.splitlines()[-1])
    campaigns, templates = await state(api)
    assert [t["name"] for t in templates] == ["Declared welcome", "nudge"]
    assert templates[0]["html"] == "<p>Welcome aboard.</p>" and templates[0]["text"] == "Hi!"
    (campaign,) = campaigns
    assert (campaign["id"], campaign["status"], campaign["from_email"]) == (
        campaign_id,
        "draft",
        "hello@drip.example.com",
    )
    first, second, third = campaign["steps"]
    assert second["condition"] == {"type": "not_opened", "step_id": first["id"], "url": None}
    assert second["alternative"] == {
        "subject": "Thanks for opening",
        "template_id": templates[0]["id"],
    }
    assert (third["subject"], third["template_id"]) == ("Last one", templates[1]["id"])

    # The same file again: nothing to do, and nothing done.
    before = await state(api)
    again = await drip(api, "plan", str(path))
    assert (again.exit_code, again.stdout) == (0, "no changes\n"), again.output
    reapplied = await drip(api, "apply", str(path))
    assert reapplied.exit_code == 0, reapplied.output
    assert reapplied.stdout.splitlines() == ["no changes", str(campaign_id)]
    assert await state(api) == before


async def test_a_draft_is_edited_through_its_steps(api: httpx.AsyncClient, tmp_path: Path) -> None:
    path = write(tmp_path, V1)
    assert (await drip(api, "apply", str(path))).exit_code == 0
    (old,), _ = await state(api)

    v2 = json.loads(json.dumps(V1))
    v2["from_name"] = "The drip team"
    v2["templates"]["nudge"]["html"] = "<p>Still with us?</p>"
    v2["steps"][0]["subject"] = "Welcome aboard"
    del v2["steps"][1]["condition"], v2["steps"][1]["alternative"]
    v2["steps"][1]["delay_hours"] = 24
    v2["steps"].pop()  # the third step goes
    write(tmp_path, v2)

    plan = await drip(api, "plan", str(path))
    assert plan.exit_code == 0, plan.output
    first, second, third = (s["id"] for s in old["steps"])
    assert plan.stdout.splitlines() == [
        f"~ template 'nudge' (id {old['steps'][1]['template_id']}) updated: html",
        f"campaign {old['id']} 'Declared' (draft):",
        "  ~ from_name: None -> 'The drip team'",
        f"  ~ step 1 (id {first}) edited: subject",
        f"  ~ step 2 (id {second}) edited: delay_hours, condition, alternative",
        f"  - step 3 (id {third}) removed: 'Last one'",
    ]
    applied = await drip(api, "apply", str(path))
    assert applied.exit_code == 0, applied.output
    (campaign,), templates = await state(api)
    assert campaign["from_name"] == "The drip team"
    assert [(s["id"], s["subject"], s["delay_hours"]) for s in campaign["steps"]] == [
        (first, "Welcome aboard", 0),
        (second, "Did you see this?", 24),
    ]
    assert campaign["steps"][1]["condition"] is None
    assert campaign["steps"][1]["alternative"] is None
    assert templates[1]["html"] == "<p>Still with us?</p>"
    assert (await drip(api, "plan", str(path))).stdout == "no changes\n"

    # A step added, with a condition on one before it, and the campaign started.
    v2["steps"].append(
        {
            "subject": "You clicked",
            "delay_hours": 1,
            "template": "welcome",
            "condition": {"type": "clicked", "step_order": 2, "url": "https://example.com/"},
        }
    )
    v2["activate"] = True
    write(tmp_path, v2)
    plan = await drip(api, "plan", str(path))
    assert plan.stdout.splitlines()[-2:] == [
        "  + step 3 added: 'You clicked'",
        "  > campaign activated",
    ], plan.output
    assert (await drip(api, "apply", str(path))).exit_code == 0
    (campaign,), _ = await state(api)
    assert campaign["status"] == "active"
    assert campaign["steps"][2]["condition"] == {
        "type": "clicked",
        "step_id": second,
        "url": "https://example.com/",
    }
    assert (await drip(api, "plan", str(path))).stdout == "no changes\n"


async def test_a_live_campaigns_steps_are_refused(api: httpx.AsyncClient, tmp_path: Path) -> None:
    live = {**V1, "activate": True}
    path = write(tmp_path, live)
    assert (await drip(api, "apply", str(path))).exit_code == 0
    before = await state(api)
    campaign_id = before[0][0]["id"]

    changed = json.loads(json.dumps(live))
    changed["steps"][0]["subject"] = "Edited"
    changed["templates"]["nudge"]["html"] = "<p>new</p>"
    write(tmp_path, changed)
    plan = await drip(api, "plan", str(path))
    assert plan.exit_code == 2, plan.output
    explanation = f"campaign {campaign_id} is active: its steps cannot change"
    assert f"cannot apply: {explanation}" in plan.stdout, plan.stdout
    assert "clone" in plan.stdout
    refused = await drip(api, "apply", str(path))
    assert refused.exit_code == 2, refused.output
    assert explanation in refused.stderr
    assert await state(api) == before, "nothing applied, not even the template"

    # Paused, the name and sender fields still apply (and `activate` does not resume it).
    assert (await drip(api, "campaign", "pause", str(campaign_id))).exit_code == 0
    renamed = {
        **live,
        "id": campaign_id,
        "name": "Declared, renamed",
        "reply_to": "r@drip.example.com",
    }
    write(tmp_path, renamed)
    plan = await drip(api, "plan", str(path))
    assert plan.exit_code == 0, plan.output
    assert plan.stdout.splitlines() == [
        f"campaign {campaign_id} 'Declared' (paused):",
        "  ~ name: 'Declared' -> 'Declared, renamed'",
        "  ~ reply_to: None -> 'r@drip.example.com'",
    ]
    assert (await drip(api, "apply", str(path))).exit_code == 0
    campaign = (await api.get(f"/api/campaigns/{campaign_id}")).json()
    assert (campaign["name"], campaign["reply_to"], campaign["status"]) == (
        "Declared, renamed",
        "r@drip.example.com",
        "paused",
    )
    assert (await drip(api, "plan", str(path))).stdout == "no changes\n"


async def test_what_cannot_be_applied_is_named(api: httpx.AsyncClient, tmp_path: Path) -> None:
    missing = write(tmp_path, {**V1, "id": 999999})
    result = await drip(api, "plan", str(missing))
    assert result.exit_code == 2
    assert "campaign 999999 (`id:` in the file) does not exist" in result.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: X\nstatus: active\nsteps:\n  - {subject: S, delay_hours: -1, template: a}\n"
    )
    result = await drip(api, "apply", str(bad))
    assert result.exit_code == 2
    assert "status: Extra inputs are not permitted" in result.stderr, result.stderr
    assert "steps.0.delay_hours: Input should be greater than or equal to 0" in result.stderr
    assert await state(api) == ([], [])


JOURNEY: dict[str, Any] = {
    "name": "Abandoned cart",
    "templates": {"nudge": {"html": "<p>Your cart misses you</p>"}},
    "trigger": {"event": "cart.abandoned", "where": {"store": "eu"}},
    "goal": {"event": "order.completed", "window_hours": 72},
    "reentry": {"allowed": True, "cooldown_hours": 168},
    "steps": [
        {"subject": "Your cart", "delay_hours": 1, "template": "nudge"},
        {
            "subject": "Still thinking?",
            "delay_hours": 0,
            "template": "nudge",
            "condition": {
                "type": "not_performed",
                "event": "order.completed",
                "where": {"paid": True},
                "match": ["cart_id"],
                "wait_hours": 24,
            },
        },
        {
            "subject": "Did you see it?",
            "delay_hours": 1,
            "template": "nudge",
            "condition": {"type": "opened", "step_order": 1, "wait_hours": 2.5},
        },
    ],
}


async def test_triggers_goals_reentry_and_event_conditions_apply(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    path = write(tmp_path, JOURNEY)
    applied = await drip(api, "apply", str(path))
    assert applied.exit_code == 0, applied.output
    (campaign,), _ = await state(api)
    assert campaign["trigger"] == JOURNEY["trigger"]
    assert campaign["goal"] == {**JOURNEY["goal"], "where": None, "exit": True}
    assert campaign["reentry"] == JOURNEY["reentry"]
    first, second, third = campaign["steps"]
    assert second["condition"] == {**JOURNEY["steps"][1]["condition"], "url": None}
    assert third["condition"] == {
        "type": "opened",
        "step_id": first["id"],
        "url": None,
        "wait_hours": 2.5,
    }
    assert (await drip(api, "plan", str(path))).stdout == "no changes\n"

    # On the draft: the trigger and the step matching on it go together, the goal stays.
    v2 = json.loads(json.dumps(JOURNEY))
    del v2["trigger"], v2["reentry"], v2["steps"][1]["condition"]["match"]
    v2["goal"]["exit"] = False
    write(tmp_path, v2)
    plan = await drip(api, "plan", str(path))
    assert plan.stdout.splitlines() == [
        f"campaign {campaign['id']} 'Abandoned cart' (draft):",
        f"  ~ trigger: {JOURNEY['trigger']!r} -> None",
        "  ~ goal: {'event': 'order.completed', 'where': None, 'window_hours': 72, 'exit': True}"
        " -> {'event': 'order.completed', 'where': None, 'window_hours': 72.0, 'exit': False}",
        "  ~ reentry: {'allowed': True, 'cooldown_hours': 168} -> None",
        f"  ~ step 2 (id {second['id']}) edited: condition",
    ], plan.output
    applied = await drip(api, "apply", str(path))
    assert applied.exit_code == 0, applied.output
    (campaign,), _ = await state(api)
    assert (campaign["trigger"], campaign["reentry"]) == (None, None)
    assert campaign["goal"]["exit"] is False
    assert "match" not in campaign["steps"][1]["condition"]
    assert (await drip(api, "plan", str(path))).stdout == "no changes\n"

    # Live: a changed goal is refused before anything is done.
    assert (await drip(api, "campaign", "activate", str(campaign["id"]))).exit_code == 0
    v2["goal"]["window_hours"] = 24
    write(tmp_path, v2)
    before = await state(api)
    refused = await drip(api, "apply", str(path))
    assert refused.exit_code == 2, refused.output
    assert f"campaign {campaign['id']} is active: its goal cannot change" in refused.stderr
    assert await state(api) == before

    # The file's own checks name what is wrong.
    bad = json.loads(json.dumps(JOURNEY))
    del bad["trigger"]
    bad["steps"][2]["condition"] = {"type": "performed", "step_order": 1}
    bad["goal"]["window_hours"] = 0
    write(tmp_path, bad)
    result = await drip(api, "plan", str(path))
    assert result.exit_code == 2
    said = " ".join(result.stderr.split())  # unwrapped
    assert "goal.window_hours: Input should be greater than 0" in said, said
    assert "steps.2.condition: a performed condition names an event, not a step_order" in said


def test_the_published_schema_is_the_models() -> None:
    """docs/campaign.schema.json, for editors, is what `drip schema` prints: regenerate it with
    `drip schema > docs/campaign.schema.json`."""
    committed = (ROOT / "docs" / "campaign.schema.json").read_text()
    assert committed == campaign_file.json_schema()
    schema = json.loads(committed)
    assert set(schema["required"]) == {"name"}
    assert "delay_hours" in schema["$defs"]["StepSpec"]["properties"]
    assert {"event", "where", "match", "wait_hours"} <= schema["$defs"]["ConditionSpec"][
        "properties"
    ].keys()
    assert {"trigger", "goal", "reentry"} <= schema["properties"].keys()


TIMED: dict[str, Any] = {
    "name": "Business hours",
    "templates": {"t": {"html": "<p>Hi</p>"}},
    "send_window": {"days": ["fri", "mon"], "start": "09:00", "end": "17:00",
                    "timezone": "recipient", "fallback_timezone": "America/New_York"},
    "on_cap": "skip",
    "steps": [
        {"subject": "Welcome", "template": "t"},
        {"subject": "Trial ends tomorrow", "template": "t",
         "delay_until": {"field": "trial_ends_at", "offset_hours": -24}},
        {"subject": "Night owl", "delay_hours": 2, "template": "t",
         "send_window": {"days": ["sat"], "start": "20:00", "end": "02:00",
                         "timezone": "Europe/Berlin"}},
        {"subject": "Receipt", "template": "t", "ignore_send_window": True},
    ],
}  # fmt: skip


async def test_send_windows_delay_until_and_the_cap_apply(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    path = write(tmp_path, TIMED)
    applied = await drip(api, "apply", str(path))
    assert applied.exit_code == 0, applied.output
    (campaign,), _ = await state(api)
    assert campaign["send_window"] == {**TIMED["send_window"], "days": ["mon", "fri"]}
    assert (campaign["frequency_cap"], campaign["on_cap"]) == ("apply", "skip")
    steps = campaign["steps"]
    assert steps[1]["delay_until"] == TIMED["steps"][1]["delay_until"]
    assert steps[1]["delay_hours"] == 0
    assert steps[2]["send_window"] == {**TIMED["steps"][2]["send_window"],
                                       "fallback_timezone": None}  # fmt: skip
    assert steps[3]["ignore_send_window"] is True
    assert (await drip(api, "plan", str(path))).stdout == "no changes\n"

    # Live: a changed window is refused before anything is done.
    assert (await drip(api, "campaign", "activate", str(campaign["id"]))).exit_code == 0
    v2 = json.loads(json.dumps(TIMED))
    v2["send_window"]["end"] = "18:00"
    write(tmp_path, v2)
    refused = await drip(api, "apply", str(path))
    assert refused.exit_code == 2, refused.output
    assert f"campaign {campaign['id']} is active: its send_window cannot change" in refused.stderr


SPLIT: dict[str, Any] = {
    "name": "Split",
    "templates": {"a": {"html": "<p>A</p>"}, "b": {"html": "<p>B</p>"}},
    "steps": [
        {
            "subject": "Welcome",
            "template": "a",
            "variants": [
                {"name": "A", "subject": "Welcome aboard", "template": "a", "weight": 1},
                {"name": "B", "subject": "You are in", "template": "b", "weight": 1},
                {"name": "control", "holdout": True, "weight": 0.5},
            ],
            "winner": {"metric": "click_rate", "after_hours": 24},
        },
        {"subject": "Plain", "delay_hours": 1, "template": "a"},
    ],
}


async def test_variants_and_the_winner_apply(api: httpx.AsyncClient, tmp_path: Path) -> None:
    path = write(tmp_path, SPLIT)
    applied = await drip(api, "apply", str(path))
    assert applied.exit_code == 0, applied.output
    (campaign,), templates = await state(api)
    ids = {t["html"]: t["id"] for t in templates}
    first, second = campaign["steps"]
    assert first["variants"] == [
        {"name": "A", "subject": "Welcome aboard", "template_id": ids["<p>A</p>"], "weight": 1},
        {"name": "B", "subject": "You are in", "template_id": ids["<p>B</p>"], "weight": 1},
        {"name": "control", "weight": 0.5, "holdout": True},
    ]
    assert first["winner"] == {"metric": "click_rate", "after_hours": 24}
    assert "variants" not in second
    assert (await drip(api, "plan", str(path))).stdout == "no changes\n"

    # A draft's split changed in place: one variant's weight, the winner removed.
    v2 = json.loads(json.dumps(SPLIT))
    v2["steps"][0]["variants"][1]["weight"] = 3
    del v2["steps"][0]["winner"]
    write(tmp_path, v2)
    assert (await drip(api, "apply", str(path))).exit_code == 0
    (campaign,), _ = await state(api)
    assert campaign["steps"][0]["variants"][1]["weight"] == 3
    assert "winner" not in campaign["steps"][0]
    assert (await drip(api, "plan", str(path))).stdout == "no changes\n"


async def test_a_live_campaigns_plan_previews_the_publish_of_its_next_version(
    api: httpx.AsyncClient, engine: Engine, tmp_path: Path
) -> None:
    live = {**V1, "activate": True}
    path = write(tmp_path, live)
    assert (await drip(api, "apply", str(path))).exit_code == 0
    (campaign,), _ = await state(api)
    first, second, third = (s["id"] for s in campaign["steps"])
    with Session(engine) as session:  # in flight: 2 before step 1, 3 before step 2, 1 before 3
        session.add_all(
            Enrollment(campaign_id=campaign["id"], email=f"p{n}@example.com",
                       workflow_id=f"none-{n}", current_step=at)
            for n, at in enumerate([0, 0, 1, 1, 1, 2])
        )  # fmt: skip
        session.commit()

    # The file drops its second step: by position, step 2 becomes the old step 3's, 3 goes.
    shorter = json.loads(json.dumps(live))
    del shorter["steps"][1]
    write(tmp_path, shorter)
    plan = await drip(api, "plan", str(path))
    assert plan.exit_code == 2, plan.output
    lines = plan.stdout.splitlines()
    assert lines[:7] == [
        f"campaign {campaign['id']} 'Declared' (active):",
        f"  ~ step 2 (id {second}) edited: subject, delay_hours, condition, alternative",
        f"  - step 3 (id {third}) removed: 'Last one'",
        "  published as a new version, the journeys in flight would:",
        "    stay: 6 in flight; waiting: 2 before step 1, 3 before step 2, 1 before step 3; "
        "they finish the version they started on; 0 exit",
        "    migrate: 6 in flight; waiting: 2 before step 1, 3 before step 2, 1 before step 3; "
        "moves: 2 from step 1 to new step 1, 3 from step 2 to new step 2, "
        "1 from step 3 to the end (they finish); 0 exit",
        "    exit: 6 in flight; waiting: 2 before step 1, 3 before step 2, 1 before step 3; 6 exit",
    ], plan.stdout
    assert lines[7].startswith(f"cannot apply: campaign {campaign['id']} is active")
    assert "drip versions" in plan.stdout
    versions = (await api.get(f"/api/campaigns/{campaign['id']}/versions")).json()["items"]
    assert [v["version"] for v in versions] == [1], "the preview stored no version"
    refused = await drip(api, "apply", str(path))
    assert refused.exit_code == 2, refused.output
    steps = (await api.get(f"/api/campaigns/{campaign['id']}")).json()["steps"]
    assert [s["id"] for s in steps] == [first, second, third]

    # A step naming a template the file creates: nothing to preview until it exists.
    added = json.loads(json.dumps(live))
    added["templates"]["fresh"] = {"html": "<p>New</p>"}
    added["steps"].append({"subject": "Four", "delay_hours": 24, "template": "fresh"})
    write(tmp_path, added)
    plan = await drip(api, "plan", str(path))
    assert "(no publish preview: a step's template does not exist yet)" in plan.stdout
