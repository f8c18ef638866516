"""Publishing a new version of a live campaign, end to end on the real dev server with the real
worker, the API and an SMTP server (asserted on the subjects of the bytes it received): 50
journeys in flight across its steps, a preview of a publish that removes step 2 and adds step 4
whose counts are what then happens, `migrate` (nobody gets step 2 after it, everyone gets step
4), and a second campaign published with `stay` that finishes its old plan while new
enrollments get the new one. Once, on SQLite: the database side is covered on both elsewhere."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import unique_domain
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template
from tools.smtp_sink import Received, SmtpSink

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

DELAY = 20 / 3600  # 20 seconds between steps
GROUP = 25


def subject(message: Received) -> bytes:
    [line] = [
        h
        for h in message.content.split(b"\r\n\r\n")[0].split(b"\r\n")
        if h.startswith(b"Subject: ")
    ]
    return line.removeprefix(b"Subject: ")


def subjects(smtp: SmtpSink, email: str) -> list[bytes]:
    return [subject(m) for m in smtp.raw_to(email)]


async def all_have(smtp: SmtpSink, emails: list[str], n: int, timeout: float = 90) -> None:
    async def check() -> bool:
        return all(len(smtp.raw_to(e)) >= n for e in emails)

    await eventually(check, f"{n} message(s) to each of {len(emails)}", timeout)


async def enroll(api: httpx.AsyncClient, campaign_id: int, emails: list[str]) -> None:
    body = {"recipients": [{"email": e} for e in emails]}
    response = await api.post(f"/api/campaigns/{campaign_id}/recipients", json=body)
    assert response.status_code in (200, 201, 202), response.text


async def draft(api: httpx.AsyncClient, campaign_id: int, steps: list[dict[str, Any]]) -> int:
    base = f"/api/campaigns/{campaign_id}/versions"
    created = await api.post(base)
    assert created.status_code == 201, created.text
    number = int(created.json()["version"])
    replaced = await api.put(f"{base}/{number}", json={"steps": steps})
    assert replaced.status_code == 200, replaced.text
    return number


async def test_migrate_previewed_then_published_to_50_journeys_and_stay_elsewhere(
    system: httpx.AsyncClient, smtp: SmtpSink
) -> None:
    api, domain = system, unique_domain()
    template = await make_template(api)
    campaign = await make_campaign(api, [
        {"subject": "One", "delay_hours": 0, "template_id": template},
        {"subject": "Two", "delay_hours": DELAY, "template_id": template},
        {"subject": "Three", "delay_hours": DELAY, "template_id": template},
    ])  # fmt: skip
    kept = await make_campaign(api, [
        {"subject": "Kept one", "delay_hours": 0, "template_id": template},
        {"subject": "Kept two", "delay_hours": DELAY, "template_id": template},
    ])  # fmt: skip
    cid, kid = campaign["id"], kept["id"]
    ids = [s["id"] for s in campaign["steps"]]
    ahead = [f"a{n}@{domain}" for n in range(GROUP)]
    behind = [f"b{n}@{domain}" for n in range(GROUP)]
    staying = [f"k{n}@{domain}" for n in range(3)]
    await enroll(api, cid, ahead)
    await enroll(api, kid, staying)
    await asyncio.sleep(10)
    await enroll(api, cid, behind)
    # `ahead` got One and Two and waits for Three; `behind` got One and waits for Two.
    await all_have(smtp, ahead, 2)
    await all_have(smtp, behind + staying, 1)

    number = await draft(api, cid, [
        {"id": ids[0], "subject": "One", "delay_hours": 0, "template_id": template},
        {"id": ids[2], "subject": "Three", "delay_hours": DELAY, "template_id": template},
        {"subject": "Four", "delay_hours": DELAY, "template_id": template},
    ])  # fmt: skip
    publish = f"/api/campaigns/{cid}/versions/{number}/publish"
    expected = {
        "policy": "migrate",
        "in_flight": 2 * GROUP,
        "waiting_before": [
            {"step_id": ids[1], "count": GROUP},
            {"step_id": ids[2], "count": GROUP},
        ],
        "moves": [  # step 2's waiters go to step 3 (the next surviving); step 3's stay there
            {"from_step": ids[1], "to_step": ids[2], "count": GROUP},
            {"from_step": ids[2], "to_step": ids[2], "count": GROUP},
        ],
        "exits": 0,
        "template_changes": [],
    }

    async def previewed() -> dict[str, Any] | None:  # each send's row update lands just after
        answer = await api.post(publish, json={"policy": "migrate", "dry_run": True})
        assert answer.status_code == 200, answer.text
        return answer.json() if answer.json() == expected else None

    await eventually(previewed, "the preview's counts", 10)
    published = await api.post(publish, json={"policy": "migrate"})
    assert published.status_code == 200, published.text
    sent_at_publish = {e: len(smtp.raw_to(e)) for e in ahead + behind}

    kept_ids = [s["id"] for s in kept["steps"]]
    kept_number = await draft(api, kid, [
        {"id": kept_ids[0], "subject": "Kept one", "delay_hours": 0, "template_id": template},
        {"id": kept_ids[1], "subject": "New two", "delay_hours": DELAY, "template_id": template},
    ])  # fmt: skip
    stayed = await api.post(
        f"/api/campaigns/{kid}/versions/{kept_number}/publish", json={"policy": "stay"}
    )
    assert stayed.status_code == 200, stayed.text
    newcomer = f"new@{domain}"
    await enroll(api, kid, [newcomer])

    await all_have(smtp, ahead, 4)
    await all_have(smtp, behind, 3)
    await all_have(smtp, staying + [newcomer], 2)
    for email in ahead:
        assert subjects(smtp, email) == [b"One", b"Two", b"Three", b"Four"], email
    for email in behind:
        assert subjects(smtp, email) == [b"One", b"Three", b"Four"], email  # never Two
    # What the preview said: everyone's next message after the publish was step 3.
    assert all(subjects(smtp, e)[sent_at_publish[e]] == b"Three" for e in ahead + behind)
    for email in staying:
        assert subjects(smtp, email) == [b"Kept one", b"Kept two"], email  # its old plan
    assert subjects(smtp, newcomer) == [b"Kept one", b"New two"]

    async def finished() -> list[dict[str, Any]] | None:
        listed = (await api.get(f"/api/campaigns/{cid}/versions")).json()["items"]
        return listed if all(v["journeys"] == 0 for v in listed) else None

    versions = await eventually(finished, "every journey finished", 30)
    assert [(v["version"], v["status"], v["policy"]) for v in versions] == [
        (1, "retired", None), (2, "live", "migrate"),
    ]  # fmt: skip
    view = (await api.get(f"/api/campaigns/{cid}/recipients/{behind[0]}")).json()
    assert (view["status"], view["campaign_version"]) == ("completed", 2)
    view = (await api.get(f"/api/campaigns/{kid}/recipients/{staying[0]}")).json()
    assert (view["status"], view["campaign_version"]) == ("completed", 1)
    await asyncio.sleep(DELAY * 3600)  # nothing more arrives
    assert all(len(smtp.raw_to(e)) == 3 for e in behind)
