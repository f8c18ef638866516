"""A/B variants on the time-skipping server, through the real worker (journeys and sends), the
API and an SMTP server: the winner's window is Temporal's time, so a day skipped is a day passed
for the winner as for the journey's delays; journeys drawn before it keep their variants."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.testing import WorkflowEnvironment

from domain.variants import pick, point
from settings import Settings
from tests.conftest import run_worker, serve_api, unique_domain
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template
from tests.support.journey import journey
from tools.smtp_sink import SmtpSink

NAMES = ["A", "B"]


async def test_the_winner_is_chosen_after_its_window_in_temporal_time(
    settings: Settings, time_env: WorkflowEnvironment, smtp: SmtpSink
) -> None:
    configured = settings.model_copy(
        update={"smtp_url": smtp.url, "from_email": "hello@drip.example.com"}
    )
    async with (
        serve_api(configured, time_env.client) as api,
        run_worker(configured, time_env.client),
    ):
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
                    ],
                    "winner": {"metric": "open_rate", "after_hours": 24},
                },
            ],
        )
        cid, step1 = campaign["id"], campaign["steps"][0]["id"]
        domain = unique_domain()

        async def enroll_and_decide(emails: list[str]) -> dict[str, dict[str, Any]]:
            response = await api.post(
                f"/api/campaigns/{cid}/recipients",
                json={"recipients": [{"email": e} for e in emails]},
            )
            assert response.json()["enrolled"] == len(emails), response.text

            async def decided() -> dict[str, dict[str, Any]] | None:
                views = {e: await journey(api, cid, e) for e in emails}
                if all(v["steps"] for v in views.values()):
                    return {e: v["steps"][0] for e, v in views.items()}
                return None

            return await eventually(decided, what="step 1 decided")

        people = [f"p{n}@{domain}" for n in range(8)]
        drawn = {p: NAMES[pick([1, 1], point(cid, step1, p))] for p in people}
        first = await enroll_and_decide(people)
        assert {p: s["variant"] for p, s in first.items()} == drawn  # the draw, every one
        assert set(drawn.values()) == set(NAMES)
        # A's messages are opened: A leads on open_rate.
        for person, step in first.items():
            if drawn[person] == "A":
                await api.post(
                    "/api/events",
                    json={"delivery_id": step["delivery_id"], "type": "open",
                          "event_id": f"open-{person}"},
                )  # fmt: skip

        # Twelve hours on, the window is still open: newcomers are drawn as before.
        await time_env.sleep(timedelta(hours=12))
        early = [f"early{n}@{domain}" for n in range(6)]
        got = await enroll_and_decide(early)
        assert {p: s["variant"] for p, s in got.items()} == {
            p: NAMES[pick([1, 1], point(cid, step1, p))] for p in early
        }
        funnel = (await api.get(f"/api/campaigns/{cid}/funnel")).json()
        assert "chosen" not in funnel["steps"][0]["winner"]

        # A day after the first send: every newcomer gets the winner, A.
        await time_env.sleep(timedelta(hours=13))
        late = [f"late{n}@{domain}" for n in range(6)]
        got = await enroll_and_decide(late)
        assert {p: s["variant"] for p, s in got.items()} == dict.fromkeys(late, "A")
        for person in late:
            [message] = smtp.to(person)
            assert message["Subject"] == "Subject A"
        funnel = (await api.get(f"/api/campaigns/{cid}/funnel")).json()
        assert funnel["steps"][0]["winner"]["chosen"] == "A"
        by_name = {v["name"]: v for v in funnel["steps"][0]["variants"]}
        assert by_name["A"]["assigned"] == sum(v == "A" for v in drawn.values()) + sum(
            NAMES[pick([1, 1], point(cid, step1, p))] == "A" for p in early
        ) + len(late)
