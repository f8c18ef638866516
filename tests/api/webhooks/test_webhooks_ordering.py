"""Provider events arrive out of order: a click before (or instead of) its open, a hard bounce
after opens, a complaint days after the journey ended. Each is still counted and acted on."""

from __future__ import annotations

from tests.api.webhooks import test_webhooks_mailgun as mailgun
from tests.api.webhooks import test_webhooks_postmark as postmark
from tests.api.webhooks import test_webhooks_ses as ses
from tests.api.webhooks.test_webhooks_sendgrid import UA, sg
from tests.api.webhooks.webhooks_support import (
    Hooks,
    addresses,
    long_campaign,
    open_test_campaign,
    step,
)


async def test_a_click_before_any_open_counts_as_an_open(system: Hooks) -> None:
    [email] = addresses("clicker")
    campaign = await open_test_campaign(system)
    await system.enroll(campaign, email)
    sent = await system.wait_sent(campaign, email)

    # Images blocked: the click comes first, the open (and even "delivered") after it.
    response = await system.mailgun(mailgun.clicked(sent))
    assert response.json()["stored"] == 1
    done = await system.wait_finished(campaign, email, "completed")
    assert step(done, 2)["decision"] == "skipped", "a click implies the message was opened"
    assert step(done, 1)["opened"] is True and step(done, 1)["clicked"] is True
    assert await system.stats(campaign) == {
        "campaign_id": campaign,
        "recipients": 1,
        "completed": 1,
        "completion_rate": 1,
        "open_rate": 1,
        "click_rate": 1,
    }

    for late in (mailgun.opened(sent), mailgun.delivered(sent)):
        assert (await system.mailgun(late)).json()["stored"] == 1
    await system.wait_signalled(delivery_id=sent.delivery_id)
    assert (await system.stats(campaign))["open_rate"] == 1, "one recipient, one open"
    assert step(await system.journey(campaign, email), 2)["decision"] == "skipped"


async def test_a_hard_bounce_after_engagement_ends_the_journey_for_good(system: Hooks) -> None:
    [email] = addresses("late-bounce")
    campaign = await long_campaign(system)
    await system.enroll(campaign, email)
    sent = await system.wait_sent(campaign, email)

    batch = [
        sg("delivered", sent),
        sg("open", sent, useragent=UA),
        sg("click", sent, url="https://a.example/x"),
    ]
    assert (await system.sendgrid(batch)).json()["stored"] == 3
    await system.wait_signalled(delivery_id=sent.delivery_id)
    assert (await system.journey(campaign, email))["status"] == "active"

    bounce = sg("bounce", sent, type="bounce", status="5.1.1", reason="550 5.1.1 no such user")
    assert (await system.sendgrid([bounce])).json()["stored"] == 1
    await system.wait_finished(campaign, email, "bounced")

    # Terminal is sticky: later opens count in stats but never revive the journey.
    assert (await system.sendgrid([sg("open", sent, useragent=UA)])).json()["stored"] == 1
    await system.wait_signalled(delivery_id=sent.delivery_id)
    journey = await system.journey(campaign, email)
    assert journey["status"] == "bounced" and journey["live"] is False


async def test_a_complaint_after_the_journey_completed_still_counts_and_suppresses(
    system: Hooks,
) -> None:
    [email] = addresses("complainer")
    campaign = await system.campaign([{"subject": "Only step", "delay_hours": 0}])
    await system.enroll(campaign, email)
    sent = await system.wait_sent(campaign, email)
    await system.wait_finished(campaign, email, "completed")

    # A feedback loop reports it days later: SES via SNS, then Postmark's copy of the fact.
    response = await system.ses(ses.complaint(sent))
    assert response.status_code == 200 and response.json()["stored"] == 1
    [event] = await system.wait_signalled(delivery_id=sent.delivery_id)
    assert event["type"] == "complaint" and event["campaign_id"] == campaign
    assert (await system.postmark(postmark.spam_complaint(sent))).json()["stored"] == 1

    journey = await system.journey(campaign, email)
    assert journey["status"] == "completed", "a finished journey keeps its outcome"
    stats = await system.stats(campaign)
    assert stats["completed"] == 1 and stats["recipients"] == 1
    other = await system.campaign([{"subject": "Newsletter", "delay_hours": 0}])
    result = await system.enroll(other, email)
    assert result["rejected"] == [{"email": email, "reason": "suppressed: complaint"}]
