"""Automated-hit classification: each rule flags what it should and leaves a person alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mail.classify import (
    IMAGE_PROXY,
    LINK_BURST,
    NO_USER_AGENT,
    NOT_A_BROWSER,
    SCANNER,
    TOO_SOON,
    Hit,
    Thresholds,
    Verdict,
    classify,
)

SENT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LATER = SENT + timedelta(minutes=10)
LIMITS = Thresholds()

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
APPLE_MAIL = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
)
OUTLOOK_DESKTOP = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)"
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)


CUBOT_PHONE = "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36"


@pytest.mark.parametrize(
    "ua", [CHROME, APPLE_MAIL, OUTLOOK_DESKTOP, CUBOT_PHONE, "Thunderbird Mozilla/5.0"]
)
def test_a_person_later_is_human(ua: str) -> None:
    assert classify(Hit("open", ua, LATER, SENT), LIMITS) == Verdict(False)
    assert classify(Hit("click", ua, LATER, SENT, url="https://a.example/"), LIMITS) == Verdict(
        False
    )


@pytest.mark.parametrize("ua", [None, "", "   "])
def test_no_user_agent(ua: str | None) -> None:
    assert classify(Hit("click", ua, LATER, SENT, url="https://a/"), LIMITS) == Verdict(
        True, NO_USER_AGENT
    )


@pytest.mark.parametrize(
    "ua",
    [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0 Safari/537.36",
        "python-requests/2.32.3",
        "curl/8.5.0",
        "Go-http-client/1.1",
        "Barracuda Sentinel (EE)",
        "Mozilla/5.0 Proofpoint URL Defense",
        "Mimecast URL Protect",
        "Mozilla/5.0 (compatible; Microsoft SafeLinks)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Mozilla/5.0 (compatible; Link Preview)",
    ],
)
def test_known_scanners(ua: str) -> None:
    assert classify(Hit("click", ua, LATER, SENT, url="https://a/"), LIMITS) == Verdict(
        True, SCANNER
    )


def test_not_a_browser() -> None:
    verdict = classify(Hit("open", "SomeFetcher/1.0", LATER, SENT), LIMITS)
    assert verdict == Verdict(True, NOT_A_BROWSER)


def test_gmail_image_proxy_open_is_a_real_open_by_default_and_noted() -> None:
    assert classify(Hit("open", GMAIL_PROXY, LATER, SENT), LIMITS) == Verdict(False, IMAGE_PROXY)
    strict = Thresholds(proxy_opens_are_human=False)
    assert classify(Hit("open", GMAIL_PROXY, LATER, SENT), strict) == Verdict(True, IMAGE_PROXY)
    # A proxy fetches images; it does not follow links.
    click = Hit("click", GMAIL_PROXY, LATER, SENT, url="https://a/")
    assert classify(click, LIMITS) == Verdict(True, IMAGE_PROXY)


def test_hit_too_soon_after_the_send() -> None:
    soon = SENT + timedelta(seconds=4.9)
    assert classify(Hit("open", CHROME, soon, SENT), LIMITS) == Verdict(True, TOO_SOON)
    assert classify(Hit("open", CHROME, SENT + timedelta(seconds=5), SENT), LIMITS) == Verdict(
        False
    )
    # The threshold is a setting.
    relaxed = Thresholds(after_send_seconds=1)
    assert classify(Hit("open", CHROME, soon, SENT), relaxed) == Verdict(False)
    # SQLite hands back naive (UTC) datetimes: still compared correctly.
    assert classify(Hit("open", CHROME, soon, SENT.replace(tzinfo=None)), LIMITS).machine


def test_unknown_send_time_is_not_held_against_the_hit() -> None:
    assert classify(Hit("open", CHROME, LATER, None), LIMITS) == Verdict(False)


def test_several_links_within_the_burst_window() -> None:
    at = LATER
    earlier = [(at - timedelta(seconds=1), "https://a.example/one")]
    burst = Hit("click", CHROME, at, SENT, url="https://a.example/two", earlier_clicks=earlier)
    assert classify(burst, LIMITS) == Verdict(True, LINK_BURST)
    # The same link again is a double click, not a burst.
    again = Hit("click", CHROME, at, SENT, url="https://a.example/one", earlier_clicks=earlier)
    assert classify(again, LIMITS) == Verdict(False)
    # Outside the window: a person reading and clicking on.
    slow = [(at - timedelta(seconds=30), "https://a.example/one")]
    assert classify(
        Hit("click", CHROME, at, SENT, url="https://a.example/two", earlier_clicks=slow), LIMITS
    ) == Verdict(False)
    # Thresholds are settings: three links needed.
    three = Thresholds(burst_links=3)
    assert classify(burst, three) == Verdict(False)
    two_earlier = earlier + [(at - timedelta(seconds=0.5), "https://a.example/three")]
    assert classify(
        Hit("click", CHROME, at, SENT, url="https://a.example/two", earlier_clicks=two_earlier),
        three,
    ) == Verdict(True, LINK_BURST)
