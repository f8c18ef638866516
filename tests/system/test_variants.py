"""A/B variants through the whole system (the dev server, a real worker, the API over HTTP, a
real SMTP server): each journey is sent the variant it draws and its view says which, the
holdout is sent nothing, engagement with a variant counts for the step's conditions, the funnel
counts each variant, and after the winner's window every new journey gets the winner."""

from __future__ import annotations

import itertools
from typing import Any

import httpx

from domain.variants import pick, point
from tests.conftest import unique_domain
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template
from tests.support.journey import journey
from tools.smtp_sink import SmtpSink

SECOND = 1 / 3600  # in hours
NAMES = ["A", "B", "control"]


async def mail_to(smtp: SmtpSink, address: str) -> list[Any]:
    return smtp.to(address)


async def test_variants_holdout_conditions_funnel_and_winner(
    system: httpx.AsyncClient, smtp: SmtpSink
) -> None:
    api = system
    template = await make_template(api)
    campaign = await make_campaign(
        api,
        [
            {
                "subject": "Plain",
                "delay_hours": 0,
                "template_id": template,
                "variants": [
                    {"name": "A", "subject": "Subject A", "template_id": template, "weight": 1},
                    {"name": "B", "subject": "Subject B", "template_id": template, "weight": 1},
                    {"name": "control", "holdout": True, "weight": 1},
                ],
                "winner": {"metric": "open_rate", "after_hours": 4 * SECOND},
            },
            {
                "subject": "Did you see it?",
                "delay_hours": 8 * SECOND,
                "template_id": template,
                "condition": {"type": "not_opened", "step_order": 1},
            },
        ],
    )
    cid, step1 = campaign["id"], campaign["steps"][0]["id"]
    domain = unique_domain()
    # Three who draw each variant (the draw is the engine's own function), so every branch below
    # has someone in it whatever the random ids: nine random addresses draw no B about 1 time in 38.
    groups: dict[str, list[str]] = {name: [] for name in NAMES}
    for n in itertools.count():
        person = f"p{n}@{domain}"
        group = groups[NAMES[pick([1, 1, 1], point(cid, step1, person))]]
        if len(group) < 3:
            group.append(person)
        if all(len(g) == 3 for g in groups.values()):
            break
    drawn = {p: name for name, group in groups.items() for p in group}
    people = list(drawn)
    enrolled = await api.post(
        f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": p} for p in people]}
    )
    assert enrolled.json()["enrolled"] == len(people)

    async def first_steps(emails: list[str]) -> dict[str, dict[str, Any]] | None:
        views = {e: await journey(api, cid, e) for e in emails}
        if all(v["steps"] for v in views.values()):
            return {e: v["steps"][0] for e, v in views.items()}
        return None

    decided = await eventually(lambda: first_steps(people), what="every step 1 decided")
    for person, variant in drawn.items():
        assert decided[person]["variant"] == variant
        if variant == "control":
            assert decided[person]["delivery_status"] == "holdout"
        else:
            [message] = await eventually(lambda p=person: mail_to(smtp, p), what="the mail")
            assert message["Subject"] == f"Subject {variant}"
    assert all(not smtp.to(p) for p, v in drawn.items() if v == "control")

    # One B recipient opens: their step 2 (not_opened step 1) is skipped, the others' sent.
    opener = next(p for p, v in drawn.items() if v == "B")
    opened = await api.post(
        "/api/events",
        json={"delivery_id": decided[opener]["delivery_id"], "type": "open", "event_id": "o-1"},
    )
    assert opened.status_code in (200, 202), opened.text

    async def second_decisions() -> dict[str, str] | None:
        views = {p: await journey(api, cid, p) for p in people}
        if all(len(v["steps"]) == 2 for v in views.values()):
            return {p: v["steps"][1]["decision"] for p, v in views.items()}
        return None

    second = await eventually(second_decisions, what="every step 2 decided")
    assert second[opener] == "skipped"
    assert all(d == "sent" for p, d in second.items() if p != opener)

    funnel = (await api.get(f"/api/campaigns/{cid}/funnel")).json()
    by_name = {v["name"]: v for v in funnel["steps"][0]["variants"]}
    for name in NAMES:
        given = sum(v == name for v in drawn.values())
        assert by_name[name]["assigned"] == given
        assert by_name[name]["sent"] == (0 if name == "control" else given)
    assert by_name["B"]["opened"] == 1
    assert by_name["B"]["open_rate"] == round(1 / by_name["B"]["sent"], 3)
    assert "variants" not in funnel["steps"][1]

    # The window has passed (4 s after the first send): newcomers all get the winner, B.
    later = [f"later{n}@{domain}" for n in range(4)]
    await api.post(
        f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": p} for p in later]}
    )
    newcomers = await eventually(lambda: first_steps(later), what="newcomers' step 1")
    assert {p: s["variant"] for p, s in newcomers.items()} == dict.fromkeys(later, "B")
    funnel = (await api.get(f"/api/campaigns/{cid}/funnel")).json()
    winner = funnel["steps"][0]["winner"]
    assert winner["chosen"] == "B" and winner["chosen_at"]
    shown = (await api.get(f"/api/campaigns/{cid}")).json()["steps"][0]["winner"]
    assert shown == winner
