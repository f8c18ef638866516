"""One-click unsubscribe (RFC 8058), end to end: the URL from a real message's List-Unsubscribe,
POSTed the way a mailbox provider does (no cookies, form or multipart body), and its effect on
every journey of the address in every campaign."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time

import httpx
import pytest

from mail.tokens import Tokens
from settings import Settings
from tests.conftest import unique_domain
from tests.support.enroll import enroll
from tests.support.factories import make_campaign, make_template
from tests.support.journey import ended, ended_by_signal
from tests.support.mailbox import (
    LINKS_HTML,
    events_of,
    hrefs,
    html_of,
    path_of,
    received,
    text_of,
    unsubscribe_url,
)
from tools.smtp_sink import SmtpSink

NEXT_STEP_AFTER = 15.0  # seconds
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
# What a mailbox provider sends: nothing but the body (no cookies, no auth, no browser).
PROVIDER_HEADERS = {"User-Agent": "GoogleOneClickUnsubscribe/1.0"}


@pytest.fixture
def settings(settings: Settings, smtp: SmtpSink) -> Settings:
    return settings.model_copy(update={"smtp_url": smtp.url})


async def two_step_campaign(api: httpx.AsyncClient, name: str, delay_hours: float) -> dict:
    template = await make_template(api, html=LINKS_HTML)
    return await make_campaign(
        api,
        [
            {"subject": f"{name} 1", "delay_hours": 0, "template_id": template},
            {"subject": f"{name} 2", "delay_hours": delay_hours, "template_id": template},
        ],
        name=name,
    )


async def suppression(api: httpx.AsyncClient, email: str) -> dict | None:
    items = (await api.get("/api/suppressions", params={"email": email})).json()["items"]
    return items[0] if items else None


async def test_one_click_unsubscribe_ends_every_journey_of_the_address(
    api: httpx.AsyncClient, worker: None, smtp: SmtpSink, settings: Settings
) -> None:
    # The journeys must end well before their second steps are due: by signal.
    news = await two_step_campaign(api, "News", NEXT_STEP_AFTER / 3600)
    tips = await two_step_campaign(api, "Tips", NEXT_STEP_AFTER / 3600)
    domain = unique_domain()
    leaver, stayer = f"leaver@{domain}", f"stayer@{domain}"
    await enroll(api, news["id"], leaver)
    await enroll(api, tips["id"], leaver, stayer)
    messages = await received(smtp, leaver, 2)
    await received(smtp, stayer, 1)
    from_news = next(m for m in messages if m["Subject"] == "News 1")
    url = unsubscribe_url(from_news)
    path = path_of(url, settings.public_url)
    # The visible link in the body is the same page.
    assert url in hrefs(html_of(from_news)) and url in text_of(from_news)

    # GET (what scanners and mail software do with header URLs): a page, never an unsubscribe.
    page = await api.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # A confirm button posting back to this same URL (a form without an action).
    form = re.search(r"<form ([^>]*)>(.*?)</form>", page.text)
    assert form and form.group(1) == 'method="post"'
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in form.group(2)
    assert "set-cookie" not in page.headers
    assert (await api.head(path)).status_code == 200
    assert await suppression(api, leaver) is None

    # The provider's one-click POST: 200 straight away, no redirect, suppression already written.
    api.cookies.clear()
    response = await api.post(path, data=ONE_CLICK, headers=PROVIDER_HEADERS)
    assert response.status_code == 200 and "location" not in response.headers
    assert not response.is_redirect and "set-cookie" not in response.headers
    entry = await suppression(api, leaver)
    assert entry and (entry["reason"], entry["source"]) == ("unsubscribe", "self")
    delivery = str(from_news["X-Drip-Delivery"])
    [event] = await events_of(api, delivery)
    assert (event["provider"], event["type"], event["raw_type"]) == (
        "self",
        "unsubscribe",
        "one_click",
    )

    # Idempotent: again and again, 200 and nothing new.
    for _ in range(2):
        again = await api.post(path, data=ONE_CLICK, headers=PROVIDER_HEADERS)
        assert again.status_code == 200
    assert len(await events_of(api, delivery)) == 1

    # Both journeys of the address end, in both campaigns, within seconds.
    for campaign in (news, tips):
        view = await ended(api, campaign["id"], leaver)
        ended_by_signal(view, NEXT_STEP_AFTER)
        assert view["status"] == "unsubscribed", view
        assert [s["step_order"] for s in view["steps"]] == [1]

    # The other recipient's second step arrives; nothing more reaches the one who left.
    await received(smtp, stayer, 2, timeout=40)
    await asyncio.sleep(1)
    assert sorted(m["Subject"] for m in smtp.to(leaver)) == ["News 1", "Tips 1"]
    view = await ended(api, tips["id"], stayer, timeout=15)
    assert view["status"] == "completed"


async def test_multipart_and_empty_posts_and_bad_tokens(
    api: httpx.AsyncClient, worker: None, smtp: SmtpSink, settings: Settings
) -> None:
    template = await make_template(api, html=LINKS_HTML)
    campaign = await make_campaign(
        api, [{"subject": "Hi", "delay_hours": 0, "template_id": template}]
    )
    domain = unique_domain()
    multipart, empty, kept = f"m@{domain}", f"e@{domain}", f"k@{domain}"
    await enroll(api, campaign["id"], multipart, empty, kept)
    paths = {}
    for address in (multipart, empty, kept):
        [message] = await received(smtp, address, 1)
        paths[address] = path_of(unsubscribe_url(message), settings.public_url)

    # multipart/form-data, as some providers send it; a JSON answer when asked for.
    response = await api.post(
        paths[multipart],
        files={"List-Unsubscribe": (None, "One-Click")},
        headers={**PROVIDER_HEADERS, "Accept": "application/json"},
    )
    assert response.status_code == 200 and response.json() == {"unsubscribed": True}
    assert (await suppression(api, multipart))["reason"] == "unsubscribe"  # type: ignore[index]

    # Any body, or none, unsubscribes too (the confirm page's button, a bare POST).
    assert (await api.post(paths[empty])).status_code == 200
    assert await suppression(api, empty) is not None

    # Forged and tampered tokens: a 404 page, and nobody unsubscribed.
    token = paths[kept].removeprefix("/u/")
    delivery = token.rpartition(".")[0]
    tokens = Tokens(settings.secret_key)
    forged = [
        # A character well inside the signature: the last one may carry only padding bits.
        token[:-10] + ("A" if token[-10] != "A" else "B") + token[-9:],
        f"{paths[multipart].removeprefix('/u/').rpartition('.')[0]}.{token.rpartition('.')[2]}",
        Tokens("another-key").unsubscribe_token(delivery),
        tokens.open_token(delivery),  # right key, wrong kind
        tokens.unsubscribe_token("no-such-delivery"),
        "garbage",
    ]
    for bad in forged:
        posted = await api.post(f"/u/{bad}", data=ONE_CLICK)
        assert posted.status_code == 404 and "location" not in posted.headers, bad
        assert (await api.get(f"/u/{bad}")).status_code == 404, bad
    assert await suppression(api, kept) is None
    assert all(e["type"] != "unsubscribe" for e in await events_of(api, delivery))

    # Lifted by an operator, then unsubscribed again from the same message: suppressed again.
    assert (await api.delete(f"/api/suppressions/{multipart}")).status_code == 204
    assert await suppression(api, multipart) is None
    assert (await api.post(paths[multipart], data=ONE_CLICK)).status_code == 200
    assert await suppression(api, multipart) is not None


@pytest.mark.slow
async def test_a_locked_database_is_waited_out_and_the_opt_out_recorded(
    api: httpx.AsyncClient, worker: None, smtp: SmtpSink, settings: Settings
) -> None:
    """Mailbox providers POST once and never retry: another writer holding SQLite's write lock
    past its 30 s busy timeout made the POST a 500 and the opt-out was lost."""
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("the write lock held here is SQLite's")
    template = await make_template(api, html=LINKS_HTML)
    campaign = await make_campaign(
        api, [{"subject": "Hi", "delay_hours": 0, "template_id": template}]
    )
    leaver = f"locked-out@{unique_domain()}"
    await enroll(api, campaign["id"], leaver)
    [message] = await received(smtp, leaver, 1)
    path = path_of(unsubscribe_url(message), settings.public_url)

    locked, release = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:
        database = settings.database_url.removeprefix("sqlite:///")
        connection = sqlite3.connect(database, timeout=60, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(60)
        connection.execute("ROLLBACK")
        connection.close()

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    try:
        assert await asyncio.to_thread(locked.wait, 10)
        started = time.monotonic()
        post = asyncio.create_task(api.post(path, data=ONE_CLICK, headers=PROVIDER_HEADERS))
        await asyncio.sleep(35)  # past the busy timeout: the first attempt has failed by now
        assert not post.done(), "answered before the opt-out could be recorded"
        release.set()
        response = await post
    finally:
        release.set()
        holder.join()
    assert response.status_code == 200, response.text
    assert time.monotonic() - started > 35
    entry = await suppression(api, leaver)
    assert entry and entry["reason"] == "unsubscribe"
