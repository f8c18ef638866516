"""What the SMTP server answers decides the journey: a permanent refusal of the mailbox ends it
as bounced and suppresses the address; a transient one is retried and never ends it; a refusal
about our own setup (relay, auth) blames nobody and is retried."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import unique_domain
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template
from tests.support.journey import journey
from tools.smtp_sink import SmtpSink

SECOND = 1 / 3600


async def two_step_campaign(api: httpx.AsyncClient) -> int:
    template = await make_template(api)
    campaign = await make_campaign(
        api,
        [
            {"subject": "one", "delay_hours": 0, "template_id": template},
            {"subject": "two", "delay_hours": 2 * SECOND, "template_id": template},
        ],
    )
    return campaign["id"]


async def test_550_ends_the_journey_as_bounced_and_suppresses(
    system: httpx.AsyncClient, smtp: SmtpSink
) -> None:
    api = system
    cid = await two_step_campaign(api)
    email = f"nobody@{unique_domain()}"
    smtp.rcpt_replies[email] = "550 5.1.1 <nobody>: Recipient address rejected: User unknown"
    await api.post(f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": email}]})

    async def bounced() -> bool:
        return (await journey(api, cid, email))["status"] == "bounced"

    await eventually(bounced, timeout=30, what="the journey to end as bounced")
    state = await journey(api, cid, email)
    assert [s["delivery_status"] for s in state["steps"]] == ["bounced"]
    assert smtp.to(email) == []
    events = (await api.get("/api/events", params={"email": email})).json()
    assert [(e["type"], e["provider"]) for e in events] == [("bounce_hard", "smtp")]
    other = await two_step_campaign(api)
    again = (
        await api.post(
            f"/api/campaigns/{other}/recipients", json={"recipients": [{"email": email}]}
        )
    ).json()
    assert again["rejected"] == [{"email": email, "reason": "suppressed: bounce_hard"}]


async def test_451_is_retried_and_never_ends_the_journey(
    system: httpx.AsyncClient, smtp: SmtpSink
) -> None:
    api = system
    cid = await two_step_campaign(api)
    email = f"greylisted@{unique_domain()}"
    smtp.rcpt_replies[email] = "451 4.7.1 Greylisted, please try again later"
    await api.post(f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": email}]})
    await asyncio.sleep(5)  # a couple of refused attempts
    state = await journey(api, cid, email)
    assert state["status"] == "active" and smtp.to(email) == []
    del smtp.rcpt_replies[email]  # the receiving server lets it through now

    async def completed() -> bool:
        return (await journey(api, cid, email))["status"] == "completed"

    await eventually(completed, timeout=60, what="the retried send and the journey to finish")
    assert sorted(str(m["Subject"]) for m in smtp.to(email)) == ["one", "two"]


async def test_relay_denied_blames_nobody_and_retries(
    system: httpx.AsyncClient, smtp: SmtpSink
) -> None:
    api = system
    cid = await two_step_campaign(api)
    email = f"someone@{unique_domain()}"
    smtp.rcpt_replies[email] = "550 5.7.1 Relaying denied"
    await api.post(f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": email}]})
    await asyncio.sleep(5)
    state = await journey(api, cid, email)
    assert state["status"] == "active", "a sender-side refusal must not end the recipient's journey"
    assert (await api.get("/api/events", params={"email": email})).json() == []
    del smtp.rcpt_replies[email]  # the operator fixed the relay settings

    async def completed() -> bool:
        return (await journey(api, cid, email))["status"] == "completed"

    await eventually(completed, timeout=60, what="the journey to finish once the relay accepts")
    assert len(smtp.to(email)) == 2
