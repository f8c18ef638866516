"""Campaign versions through the API: a draft of the next version, edited declaratively,
validated as a new campaign, previewed and published (issue 14)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from activities.bookkeeping import BookkeepingActivities
from domain.versions import VersionChange, VersionPlanQuery, VersionPolicy
from storage.models import CampaignVersion, Enrollment
from storage.versions import mark_broadcast, step_content, unbroadcast
from tests.support.eventually import eventually
from tests.support.factories import error_locs, make_campaign, make_template


async def _three_steps(api: httpx.AsyncClient) -> tuple[dict[str, Any], list[int], int]:
    template = await make_template(api)
    campaign = await make_campaign(
        api,
        [
            {"subject": "One", "delay_hours": 0, "template_id": template},
            {"subject": "Two", "delay_hours": 24, "template_id": template},
            {"subject": "Three", "delay_hours": 24, "template_id": template},
        ],
    )
    steps = (await api.get("/api/campaigns/steps", params={"campaign_id": campaign["id"]})).json()
    return campaign, [s["id"] for s in steps], template


def _enroll(engine: Engine, campaign_id: int, at_steps: list[int]) -> list[int]:
    """Enrollment rows in flight, one per current_step given (no journey runs them)."""
    with Session(engine) as session:
        rows = [
            Enrollment(
                campaign_id=campaign_id,
                email=f"p{n}@example.com",
                workflow_id=f"none-{campaign_id}-{n}",
                current_step=step,
            )
            for n, step in enumerate(at_steps)
        ]
        session.add_all(rows)
        session.commit()
        return [r.id or 0 for r in rows]


async def test_a_draft_version_is_a_copy_of_the_live_one_and_there_is_one(
    api: httpx.AsyncClient,
) -> None:
    campaign, ids, template = await _three_steps(api)
    base = f"/api/campaigns/{campaign['id']}/versions"
    created = await api.post(base)
    assert created.status_code == 201, created.text
    draft = created.json()
    assert (draft["version"], draft["status"]) == (2, "draft")
    assert [s["id"] for s in draft["steps"]] == ids
    assert [s["subject"] for s in draft["steps"]] == ["One", "Two", "Three"]
    assert (await api.post(base)).status_code == 409
    listed = (await api.get(base)).json()
    assert [(v["version"], v["status"]) for v in listed["items"]] == [(1, "live"), (2, "draft")]
    assert listed["items"][0]["published_at"] is not None
    assert listed["next_cursor"] is None

    draft_campaign = await make_campaign(
        api, [{"subject": "x", "delay_hours": 0, "template_id": template}], activate=False
    )
    refused = await api.post(f"/api/campaigns/{draft_campaign['id']}/versions")
    assert refused.status_code == 409


async def test_put_edits_in_place_adds_and_removes_and_validates(
    api: httpx.AsyncClient,
) -> None:
    campaign, ids, template = await _three_steps(api)
    other, other_ids, _ = await _three_steps(api)
    base = f"/api/campaigns/{campaign['id']}/versions"
    await api.post(base)
    body = {
        "steps": [
            {"id": ids[0], "subject": "One, fixed", "delay_hours": 0, "template_id": template},
            {"id": ids[2], "subject": "Three", "delay_hours": 12, "template_id": template},
            {"subject": "Four", "delay_hours": 24, "template_id": template,
             "condition": {"type": "not_opened", "step_order": 2}},
        ],
        "goal": {"event": "purchase", "window_hours": 72},
    }  # fmt: skip
    replaced = await api.put(f"{base}/2", json=body)
    assert replaced.status_code == 200, replaced.text
    steps = replaced.json()["steps"]
    assert [s["id"] for s in steps[:2]] == [ids[0], ids[2]] and steps[2]["id"] < 0
    assert [(s["subject"], s["delay_hours"]) for s in steps] == [
        ("One, fixed", 0), ("Three", 12), ("Four", 24),
    ]  # fmt: skip
    assert steps[2]["condition"]["step_id"] == ids[2]
    assert replaced.json()["goal"]["event"] == "purchase"
    # The live version is untouched until it is published.
    live = (await api.get("/api/campaigns/steps", params={"campaign_id": campaign["id"]})).json()
    assert [s["subject"] for s in live] == ["One", "Two", "Three"]

    foreign = {"steps": [{**body["steps"][0], "id": other_ids[0]}]}
    answer = await api.put(f"{base}/2", json=foreign)
    assert answer.status_code == 422 and error_locs(answer) == [["body", "steps", 0, "id"]]
    assert str(other["id"]) in answer.text
    missing = {"steps": [{**body["steps"][0], "template_id": 999_999}]}
    answer = await api.put(f"{base}/2", json=missing)
    assert answer.status_code == 422
    assert error_locs(answer) == [["body", "steps", 0, "template_id"]]
    late = {"steps": [{**body["steps"][2], "condition": {"type": "opened", "step_order": 3}}]}
    answer = await api.put(f"{base}/2", json=late)
    assert error_locs(answer) == [["body", "steps", 0, "condition", "step_order"]]
    assert (await api.put(f"{base}/1", json=body)).status_code == 409  # the live one
    assert (await api.put(f"{base}/9", json=body)).status_code == 404


async def test_preview_counts_from_the_database_and_changes_nothing(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    campaign, ids, template = await _three_steps(api)
    # 2 wait before step 1, 3 before step 2, 4 before step 3, 1 past the end.
    _enroll(engine, campaign["id"], [0] * 2 + [1] * 3 + [2] * 4 + [3])
    base = f"/api/campaigns/{campaign['id']}/versions"
    await api.post(base)
    # Remove step 2, add step 4.
    body = {
        "steps": [
            {"id": ids[0], "subject": "One", "delay_hours": 0, "template_id": template},
            {"id": ids[2], "subject": "Three", "delay_hours": 24, "template_id": template},
            {"subject": "Four", "delay_hours": 24, "template_id": template},
        ]
    }
    assert (await api.put(f"{base}/2", json=body)).status_code == 200
    preview = await api.post(f"{base}/2/publish", json={"policy": "migrate", "dry_run": True})
    assert preview.status_code == 200, preview.text
    assert preview.json() == {
        "policy": "migrate",
        "in_flight": 10,
        "waiting_before": [
            {"step_id": ids[0], "count": 2},
            {"step_id": ids[1], "count": 3},
            {"step_id": ids[2], "count": 4},
        ],
        "moves": [
            {"from_step": ids[0], "to_step": ids[0], "count": 2},
            {"from_step": ids[1], "to_step": ids[2], "count": 3},  # removed: the next surviving
            {"from_step": ids[2], "to_step": ids[2], "count": 4},
        ],
        "exits": 0,
        "template_changes": [],
    }
    exit_preview = await api.post(f"{base}/2/publish", json={"policy": "exit", "dry_run": True})
    assert (exit_preview.json()["exits"], exit_preview.json()["moves"]) == (10, [])
    version = (await api.get(f"{base}/2")).json()
    assert version["status"] == "draft"
    live = (await api.get("/api/campaigns/steps", params={"campaign_id": campaign["id"]})).json()
    assert [s["id"] for s in live] == ids

    # A template edited since version 1 was published is shown.
    edited = await api.patch(f"/api/templates/{template}", json={"html": "<p>new</p>"})
    assert edited.status_code == 200, edited.text
    preview = await api.post(f"{base}/2/publish", json={"policy": "stay", "dry_run": True})
    changes = preview.json()["template_changes"]
    assert [(c["version"], c["step_id"], c["template_id"]) for c in changes] == [
        (1, step_id, template) for step_id in ids
    ]


async def test_a_definition_is_previewed_as_a_draft_is_with_no_version_stored(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    campaign, ids, template = await _three_steps(api)
    _enroll(engine, campaign["id"], [0] * 2 + [1] * 3 + [2] * 4 + [3])
    base = f"/api/campaigns/{campaign['id']}/versions"
    definition = {
        "steps": [
            {"id": ids[0], "subject": "One", "delay_hours": 0, "template_id": template},
            {"id": ids[2], "subject": "Three", "delay_hours": 24, "template_id": template},
            {"subject": "Four", "delay_hours": 24, "template_id": template},
        ]
    }
    answers = {}
    for policy in ("stay", "migrate", "exit"):
        answer = await api.post(
            f"{base}/preview", json={"definition": definition, "policy": policy}
        )
        assert answer.status_code == 200, answer.text
        answers[policy] = answer.json()
    assert answers["migrate"]["moves"] == [
        {"from_step": ids[0], "to_step": ids[0], "count": 2},
        {"from_step": ids[1], "to_step": ids[2], "count": 3},
        {"from_step": ids[2], "to_step": ids[2], "count": 4},
    ]
    assert (answers["exit"]["exits"], answers["stay"]["exits"], answers["stay"]["moves"]) == (
        10, 0, []
    )  # fmt: skip
    with Session(engine) as session:
        stored = session.exec(
            select(CampaignVersion).where(CampaignVersion.campaign_id == campaign["id"])
        ).all()
    assert [v.number for v in stored] == [1]  # no version row appeared
    # The same counts as a stored draft's dry run (one service path).
    await api.post(base)
    assert (await api.put(f"{base}/2", json=definition)).status_code == 200
    for policy, previewed in answers.items():
        dry = await api.post(f"{base}/2/publish", json={"policy": policy, "dry_run": True})
        assert dry.json() == previewed

    missing = {"steps": [{**definition["steps"][0], "template_id": 999_999}]}
    answer = await api.post(f"{base}/preview", json={"definition": missing, "policy": "stay"})
    assert answer.status_code == 422
    assert error_locs(answer) == [["body", "definition", "steps", 0, "template_id"]]
    foreign = {"steps": [{**definition["steps"][0], "id": 999_999}]}
    answer = await api.post(f"{base}/preview", json={"definition": foreign, "policy": "stay"})
    assert error_locs(answer) == [["body", "definition", "steps", 0, "id"]]
    answer = await api.post(f"{base}/preview", json={"definition": definition, "policy": "move"})
    assert answer.status_code == 422 and error_locs(answer) == [["body", "policy"]]
    draft = await api.post("/api/campaigns", json={"name": "Draft", "steps": []})
    answer = await api.post(
        f"/api/campaigns/{draft.json()['id']}/versions/preview",
        json={"definition": definition, "policy": "stay"},
    )
    assert answer.status_code == 409, answer.text  # a draft campaign: edit its steps instead
    assert (
        await api.post(
            "/api/campaigns/999999/versions/preview",
            json={"definition": definition, "policy": "stay"},
        )
    ).status_code == 404


async def test_publish_stay_makes_the_draft_live_and_old_journeys_keep_their_content(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    campaign, ids, template = await _three_steps(api)
    [on_v1] = _enroll(engine, campaign["id"], [1])
    base = f"/api/campaigns/{campaign['id']}/versions"
    await api.post(base)
    body = {
        "steps": [
            {"id": ids[0], "subject": "One", "delay_hours": 0, "template_id": template},
            {"id": ids[2], "subject": "Three, edited", "delay_hours": 24, "template_id": template},
            {"subject": "Four", "delay_hours": 24, "template_id": template},
        ]
    }
    await api.put(f"{base}/2", json=body)
    published = await api.post(f"{base}/2/publish", json={"policy": "stay"})
    assert published.status_code == 200, published.text
    assert (published.json()["status"], published.json()["policy"]) == ("live", "stay")
    live = (await api.get("/api/campaigns/steps", params={"campaign_id": campaign["id"]})).json()
    assert [s["subject"] for s in live] == ["One", "Three, edited", "Four"]
    assert [s["id"] for s in live[:2]] == [ids[0], ids[2]]
    assert live[2]["id"] == published.json()["steps"][2]["id"] > 0
    listed = (await api.get(base)).json()["items"]
    assert [(v["version"], v["status"], v["journeys"]) for v in listed] == [
        (1, "retired", 1), (2, "live", 0),
    ]  # fmt: skip
    # The journey on version 1 sends version 1's content: its edited step, its removed step.
    with Session(engine) as session:
        enrollment = session.get(Enrollment, on_v1)
        assert enrollment is not None and enrollment.campaign_version == 1
        three, two = (
            step_content(session, enrollment, ids[2]),
            step_content(session, enrollment, ids[1]),
        )
        assert three is not None and three.subject == "Three"
        assert two is not None and two.subject == "Two"
    assert (await api.post(f"{base}/2/publish", json={"policy": "stay"})).status_code == 409
    assert (await api.put(f"{base}/2", json=body)).status_code == 409
    assert (await api.post(f"{base}/1/publish", json={"policy": "stay"})).status_code == 409
    assert (await api.post(base)).json()["version"] == 3


async def test_publish_migrate_moves_the_running_journeys_rows_to_the_new_version(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    campaign, ids, template = await _three_steps(api)
    running, finished = _enroll(engine, campaign["id"], [1, 3])
    with Session(engine) as session:
        done = session.get(Enrollment, finished)
        assert done is not None
        done.status = "completed"
        session.add(done)
        session.commit()
    base = f"/api/campaigns/{campaign['id']}/versions"
    await api.post(base)
    published = await api.post(f"{base}/2/publish", json={"policy": "migrate"})
    assert published.status_code == 200, published.text
    with Session(engine) as session:
        versions = [session.get(Enrollment, i) for i in (running, finished)]
        assert [e.campaign_version for e in versions if e] == [0, 1]  # 0: the live one, 2
    listed = (await api.get(base)).json()["items"]
    assert [(v["version"], v["journeys"]) for v in listed] == [(1, 0), (2, 1)]


async def test_a_migrate_not_yet_told_is_what_the_outbox_sends_again(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    campaign, _, _ = await _three_steps(api)
    base = f"/api/campaigns/{campaign['id']}/versions"
    await api.post(base)
    assert (await api.post(f"{base}/2/publish", json={"policy": "migrate"})).status_code == 200

    async def told() -> bool:  # the publish's own batch signal, in the background
        with Session(engine) as session:
            version = session.get(CampaignVersion, (campaign["id"], 2))
            return version is not None and version.broadcast

    await eventually(told, "the batch signal recorded as told", 10)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    assert (campaign["id"], VersionChange(2, VersionPolicy.MIGRATE)) not in unbroadcast(
        engine, soon
    )
    with Session(engine) as session:
        version = session.get(CampaignVersion, (campaign["id"], 2))
        assert version is not None
        version.broadcast = False  # as if the batch signal had not gone through
        session.add(version)
        session.commit()
    assert (campaign["id"], VersionChange(2, VersionPolicy.MIGRATE)) in unbroadcast(engine, soon)
    mark_broadcast(engine, campaign["id"], 2)
    assert (campaign["id"], VersionChange(2, VersionPolicy.MIGRATE)) not in unbroadcast(
        engine, soon
    )


async def test_a_published_versions_plan_is_read_once_per_worker(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    """A publish to 100,000 journeys switches each at its next step boundary: the worker reads
    the (fixed) plan of the version once, not once per journey."""
    campaign, ids, template = await _three_steps(api)
    base = f"/api/campaigns/{campaign['id']}/versions"
    await api.post(base)
    replaced = await api.put(f"{base}/2", json={"steps": [
        {"id": ids[0], "subject": "One", "delay_hours": 0, "template_id": template},
        {"id": ids[2], "subject": "Three", "delay_hours": 12, "template_id": template},
    ]})  # fmt: skip
    assert replaced.status_code == 200, replaced.text
    assert (await api.post(f"{base}/2/publish", json={"policy": "migrate"})).status_code == 200
    activities = BookkeepingActivities(engine)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    plan = activities.load_version_plan(VersionPlanQuery(campaign["id"], 2))
    assert [(s.step_id, s.delay_seconds) for s in plan.steps] == [(ids[0], 0), (ids[2], 43200)]
    reads = len(statements)
    assert reads > 0
    assert activities.load_version_plan(VersionPlanQuery(campaign["id"], 2)) == plan
    assert len(statements) == reads  # kept: no second read
    first = activities.load_version_plan(VersionPlanQuery(campaign["id"], 1))
    assert len(first.steps) == 3 and len(statements) > reads  # another version is read
