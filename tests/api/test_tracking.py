"""Our own tracking, end to end: real messages from the worker through real SMTP, then the pixel
and the click redirect driven over HTTP the way a mail client, a person and a scanner do."""

from __future__ import annotations

import asyncio
import struct
from email.message import EmailMessage

import httpx
import pytest

from mail.tokens import Tokens
from settings import Settings
from tests.conftest import unique_domain
from tests.support.enroll import enroll
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template
from tests.support.journey import journey
from tests.support.mailbox import (
    BROWSER,
    LINKS_HTML,
    ORIGINAL_LINKS,
    events_of,
    hrefs,
    html_of,
    path_of,
    pixel_url,
    received,
    text_of,
    unsubscribe_url,
)
from tools.smtp_sink import SmtpSink

# A hit sooner than this after the send is a scanner's; the tests wait it out to act as people.
AFTER_SEND = 3.0


@pytest.fixture
def settings(settings: Settings, smtp: SmtpSink) -> Settings:
    return settings.model_copy(
        update={
            "smtp_url": smtp.url,
            "from_email": "news@sender.example",
            "unsubscribe_mailto": "unsubscribe@sender.example",
            "machine_after_send_seconds": AFTER_SEND,
        }
    )


async def one_step_campaign(api: httpx.AsyncClient) -> dict:
    template = await make_template(api, html=LINKS_HTML)
    return await make_campaign(
        api,
        [{"subject": "Hello {{ first_name }}", "delay_hours": 0, "template_id": template}],
        name="Spring News",
        from_name="Acme",
        reply_to="help@sender.example",
    )


def delivery_id_of(message: EmailMessage) -> str:
    return str(message["X-Drip-Delivery"])


def is_pixel(body: bytes) -> bool:
    """A GIF, 1x1, whose one colour is transparent (graphic control extension flag set)."""
    width, height = struct.unpack("<HH", body[6:10])
    gce = body.find(b"\x21\xf9\x04")
    return (
        body[:6] == b"GIF89a" and (width, height) == (1, 1) and gce > 0 and body[gce + 3] & 1 == 1
    )


async def test_received_message_headers_and_parts(
    api: httpx.AsyncClient, worker: None, smtp: SmtpSink, settings: Settings
) -> None:
    campaign = await one_step_campaign(api)
    address = f"jo@{unique_domain()}"
    await enroll(api, campaign["id"], address)
    [message] = await received(smtp, address, 1)
    delivery = delivery_id_of(message)
    base = settings.public_url

    assert message["From"] == "Acme <news@sender.example>"
    assert message["Reply-To"] == "help@sender.example"
    assert message["Subject"] == "Hello Jo"
    assert message["Message-ID"] == f"<{delivery}@sender.example>"
    assert 0 < len(delivery) <= 64 and delivery.replace("-", "").replace("_", "").isalnum()
    assert address.split("@")[0] not in delivery  # no personal data in the id
    unsubscribe = unsubscribe_url(message)
    assert unsubscribe.startswith(f"{base}/u/")  # plain http in tests: DRIP_PUBLIC_URL decides
    assert message["List-Unsubscribe"] == (
        f"<{unsubscribe}>, <mailto:unsubscribe@sender.example?subject=unsubscribe%20{delivery}>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] == f'"Spring News" <campaign-{campaign["id"]}.sender.example>'
    assert message["X-Drip-Delivery"] == delivery
    # A plain relay: no provider's correlation header (tests/mail/test_message.py has those).
    for name in ("X-SMTPAPI", "X-Mailgun-Variables", "X-PM-Metadata-drip_delivery_id"):
        assert name not in message
    assert "X-SES-MESSAGE-TAGS" not in message

    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    html, text = html_of(message), text_of(message)
    assert "Hi Jo" in html and "Hi Jo" in text
    # A visible unsubscribe link in both parts, never behind the click redirect.
    assert unsubscribe in hrefs(html) and unsubscribe in text
    tokens = Tokens(settings.secret_key)
    tracked = [h for h in hrefs(html) if h != unsubscribe]
    assert tracked == [f"{base}/t/c/{tokens.click_token(delivery, i)}" for i in range(2)]
    assert "shop.example" not in html  # every link goes through our redirect
    assert pixel_url(html) == f"{base}/t/o/{tokens.open_token(delivery)}.gif"


async def test_open_pixel(
    api: httpx.AsyncClient, worker: None, smtp: SmtpSink, settings: Settings
) -> None:
    campaign = await one_step_campaign(api)
    address = f"jo@{unique_domain()}"
    await enroll(api, campaign["id"], address)
    [message] = await received(smtp, address, 1)
    delivery = delivery_id_of(message)
    pixel = path_of(pixel_url(html_of(message)), settings.public_url)
    stats = f"/api/campaigns/stats?campaign_id={campaign['id']}"

    # A scanner fetching at delivery time: stored, marked, not counted.
    first = await api.get(pixel, headers={"User-Agent": BROWSER})
    assert first.status_code == 200 and is_pixel(first.content)
    assert first.headers["content-type"] == "image/gif"
    assert first.headers["cache-control"] == "no-cache, no-store, private"
    assert first.headers["x-robots-tag"] == "noindex"
    assert "set-cookie" not in first.headers
    [machine] = await events_of(api, delivery)
    assert machine["provider"] == "self" and machine["type"] == "open"
    assert machine["machine"] is True and machine["machine_reason"] == "too_soon_after_send"
    assert (await api.get(stats)).json()["open_rate"] == 0

    # HEAD and forged tokens: the image, and nothing recorded.
    head = await api.head(pixel, headers={"User-Agent": BROWSER})
    assert head.status_code == 200 and head.headers["content-type"] == "image/gif"
    token = pixel.removeprefix("/t/o/").removesuffix(".gif")
    tampered = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    for bad in (
        f"/t/o/{tampered}.gif",
        "/t/o/nonsense.gif",
        f"/t/o/{Tokens('another-key').open_token(delivery)}.gif",
    ):
        response = await api.get(bad, headers={"User-Agent": BROWSER})
        assert response.status_code == 200 and is_pixel(response.content), bad
        assert response.headers["cache-control"] == "no-cache, no-store, private"
    assert len(await events_of(api, delivery)) == 1

    # A person opening it later: counted.
    await asyncio.sleep(AFTER_SEND)
    human = await api.get(pixel, headers={"User-Agent": BROWSER})
    assert human.status_code == 200 and is_pixel(human.content)
    events = await events_of(api, delivery)
    assert [(e["machine"], e["machine_reason"]) for e in events] == [
        (True, "too_soon_after_send"),
        (False, None),
    ]
    assert (await api.get(stats)).json()["open_rate"] == 1
    view = await journey(api, campaign["id"], address)
    assert view["steps"][0]["opened"] is True and view["steps"][0]["machine_opens"] == 1

    # Gmail's image proxy: a real open, noted as such.
    await api.get(pixel, headers={"User-Agent": "Mozilla/5.0 (via ggpht.com GoogleImageProxy)"})
    proxy = (await events_of(api, delivery))[-1]
    assert (proxy["machine"], proxy["machine_reason"]) == (False, "image_proxy")

    # Signalled like any other event: the journey has seen them all.
    await eventually(
        lambda: _all_signalled(api, delivery), "the open events to be signalled", timeout=20
    )


async def _all_signalled(api: httpx.AsyncClient, delivery: str) -> bool:
    return all(e["signalled"] for e in await events_of(api, delivery))


async def test_click_redirect_and_no_open_redirect(
    api: httpx.AsyncClient, worker: None, smtp: SmtpSink, settings: Settings
) -> None:
    campaign = await one_step_campaign(api)
    domain = unique_domain()
    first, second = f"a@{domain}", f"b@{domain}"
    await enroll(api, campaign["id"], first, second)
    [mine] = await received(smtp, first, 1)
    [theirs] = await received(smtp, second, 1)
    delivery, other = delivery_id_of(mine), delivery_id_of(theirs)
    base = settings.public_url
    links = [path_of(h, base) for h in hrefs(html_of(mine)) if "/t/c/" in h]
    assert len(links) == 2
    await asyncio.sleep(AFTER_SEND)

    # HEAD (what scanners send): the redirect, nothing recorded.
    head = await api.head(links[0], headers={"User-Agent": BROWSER})
    assert head.status_code == 307 and head.headers["location"] == ORIGINAL_LINKS[0]
    assert await events_of(api, delivery) == []

    # Forged, tampered and out-of-range tokens: a neutral 404 page, no redirect, no event.
    tokens = Tokens(settings.secret_key)
    token = links[0].removeprefix("/t/c/")
    payload, _, signature = token.rpartition(".")
    forged = [
        f"{delivery}.1.{signature}",  # another index, same signature
        f"{other}.0.{signature}",  # another delivery, same signature
        token[:-2] + ("xx" if not token.endswith("xx") else "yy"),  # a broken signature
        tokens.click_token(delivery, 2),  # validly signed, but the message had two links
        Tokens("another-key").click_token(delivery, 0),
        tokens.open_token(delivery),  # a token of another kind
        "garbage",
    ]
    assert payload == f"{delivery}.0"
    for bad in forged:
        response = await api.get(f"/t/c/{bad}", headers={"User-Agent": BROWSER})
        assert response.status_code == 404, bad
        assert "location" not in response.headers
        assert response.headers["content-type"].startswith("text/html")
        assert "shop.example" not in response.text
    # The target never comes from the URL.
    smuggled = await api.get(
        links[0], params={"url": "https://evil.example/"}, headers={"User-Agent": BROWSER}
    )
    assert smuggled.status_code == 307 and smuggled.headers["location"] == ORIGINAL_LINKS[0]
    assert "set-cookie" not in smuggled.headers
    assert smuggled.headers["referrer-policy"] == "no-referrer"

    # The second link right after the first: no person clicks two links within 2 s.
    burst = await api.get(links[1], headers={"User-Agent": BROWSER})
    assert burst.status_code == 307 and burst.headers["location"] == ORIGINAL_LINKS[1]
    events = await events_of(api, delivery)
    assert [(e["type"], e["url"], e["machine"], e["machine_reason"]) for e in events] == [
        ("click", ORIGINAL_LINKS[0], False, None),
        ("click", ORIGINAL_LINKS[1], True, "link_burst"),
    ]
    assert all(e["provider"] == "self" for e in events)
    assert await events_of(api, other) == []  # the other message saw nothing

    # A security gateway following the link: redirected too, but marked.
    scanner = await api.get(links[0], headers={"User-Agent": "python-requests/2.32"})
    assert scanner.status_code == 307
    last = (await events_of(api, delivery))[-1]
    assert (last["machine"], last["machine_reason"]) == (True, "scanner")
    view = await journey(api, campaign["id"], first)
    assert view["steps"][0]["clicked_urls"] == [ORIGINAL_LINKS[0]]
    assert view["steps"][0]["machine_clicks"] == 2


async def test_machine_click_does_not_meet_a_clicked_condition(
    api: httpx.AsyncClient, worker: None, smtp: SmtpSink, settings: Settings
) -> None:
    template = await make_template(api, html=LINKS_HTML)
    follow_up = await make_template(api, html="<p>Thanks for clicking</p>")
    campaign = await make_campaign(
        api,
        [
            {"subject": "Hello", "delay_hours": 0, "template_id": template},
            # About 14 s later, only for those who clicked the first message.
            {
                "subject": "Follow-up",
                "delay_hours": 0.004,
                "template_id": follow_up,
                "condition": {"type": "clicked", "step_order": 1},
            },
        ],
    )
    domain = unique_domain()
    bot, person = f"bot@{domain}", f"person@{domain}"
    await enroll(api, campaign["id"], bot, person)
    [to_bot] = await received(smtp, bot, 1)
    [to_person] = await received(smtp, person, 1)
    await asyncio.sleep(AFTER_SEND)
    base = settings.public_url
    bot_link = path_of(hrefs(html_of(to_bot))[0], base)
    person_link = path_of(hrefs(html_of(to_person))[0], base)
    assert (
        await api.get(bot_link, headers={"User-Agent": "Barracuda Sentinel"})
    ).status_code == 307
    assert (await api.get(person_link, headers={"User-Agent": BROWSER})).status_code == 307

    async def step_two_decided(email: str) -> dict | None:
        view = await journey(api, campaign["id"], email)
        return view if view["finished_at"] and len(view["steps"]) == 2 else None

    bot_view = await eventually(lambda: step_two_decided(bot), "the bot's step 2", timeout=40)
    person_view = await eventually(
        lambda: step_two_decided(person), "the person's step 2", timeout=40
    )
    assert bot_view["steps"][1]["decision"] == "skipped"
    assert bot_view["steps"][1]["condition_met"] is False
    assert bot_view["steps"][0]["machine_clicks"] == 1 and bot_view["steps"][0]["clicked"] is False
    assert person_view["steps"][1]["decision"] == "sent"
    assert person_view["steps"][1]["condition_met"] is True
    assert [m["Subject"] for m in await received(smtp, person, 2)] == ["Hello", "Follow-up"]
    assert len(smtp.to(bot)) == 1
    stats = (await api.get(f"/api/campaigns/stats?campaign_id={campaign['id']}")).json()
    assert stats["click_rate"] == 0.5


async def test_a_flood_of_hits_signals_the_journey_once_per_open_and_link(
    api: httpx.AsyncClient, worker: None, smtp: SmtpSink, settings: Settings, dev_env
) -> None:
    """Every hit used to store a row and signal the journey: enough of them made Temporal
    terminate the workflow for its history size. Now only what changes the journey is
    signalled (the first human open, the first human click of each link), and each token
    records at most DRIP_TRACKING_HITS_PER_MINUTE hits a minute; all are still answered."""
    template = await make_template(api, html=LINKS_HTML)
    steps = [{"subject": "One", "delay_hours": 0, "template_id": template}]
    campaign = await make_campaign(api, [*steps, {**steps[0], "delay_hours": 24}])
    address = f"flood@{unique_domain()}"
    await enroll(api, campaign["id"], address)
    [message] = await received(smtp, address, 1)
    delivery = delivery_id_of(message)
    html = html_of(message)
    pixel = path_of(pixel_url(html), settings.public_url)
    links = [path_of(h, settings.public_url) for h in hrefs(html) if "/t/c/" in h]
    await asyncio.sleep(AFTER_SEND)  # a person, not a scanner at delivery time

    hits = 40
    limit = settings.tracking_hits_per_minute
    for _ in range(hits):
        assert is_pixel((await api.get(pixel, headers={"User-Agent": BROWSER})).content)
        redirect = await api.get(links[0], headers={"User-Agent": BROWSER})
        assert redirect.status_code == 307
    await asyncio.sleep(settings.machine_burst_seconds + 0.5)  # not a scanner's burst of links
    await api.get(links[1], headers={"User-Agent": BROWSER})

    events = await events_of(api, delivery)
    opens = [e for e in events if e["type"] == "open"]
    clicks = [e for e in events if e["type"] == "click"]
    assert len(opens) == limit and len(clicks) == limit + 1  # the rest only counted
    await eventually(lambda: _all_signalled(api, delivery), "the hits to be settled", timeout=20)
    view = await journey(api, campaign["id"], address)
    assert view["status"] == "active" and view["steps"][0]["opened"] is True
    assert sorted(view["steps"][0]["clicked_urls"]) == ORIGINAL_LINKS
    history = await dev_env.client.get_workflow_handle(view["workflow_id"]).fetch_history()
    signals = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in history.events
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert signals == ["on_event"] * 3, signals  # first open, first click of each link
