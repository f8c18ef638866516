"""Tell a person's open or click from an automated one (reference §9): scanners, link checkers
and security gateways fetch pixels and follow links without anyone reading the message.

A suspect hit is still stored, with `machine=True` and the first reason that matched; conditions
and stats count only the rest. Each rule is a cheap signal, none is proof: the thresholds are
settings so an operator can tune them to their audience.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

# Reasons, as stored in Event.machine_reason.
NO_USER_AGENT = "no_user_agent"
NOT_A_BROWSER = "not_a_browser"
SCANNER = "scanner"
IMAGE_PROXY = "image_proxy"
TOO_SOON = "too_soon_after_send"
LINK_BURST = "link_burst"

# Security gateways, link checkers, headless browsers and HTTP libraries. Substrings, matched
# case-insensitively. Vendor fingerprints are indicative, not authoritative (reference §9).
SCANNER_AGENTS = (
    "headlesschrome",
    "phantomjs",
    "puppeteer",
    "playwright",
    "selenium",
    "barracuda",
    "proofpoint",
    "mimecast",
    "safelinks",
    "safe links",
    "microsoft defender",
    "bingpreview",
    "cisco",
    "ironport",
    "fortiguard",
    "symantec",
    "trend micro",
    "sophos",
    "zscaler",
    "forcepoint",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "curl/",
    "wget/",
    "go-http-client",
    "okhttp",
    "java/",
    "apache-httpclient",
    "libwww-perl",
    "node-fetch",
    "axios/",
)
# "bingbot", "Googlebot/2.1", "link preview"; not the CUBOT phone brand.
_BOT_WORDS = re.compile(r"(?<!cu)bot\b|\b(crawler|spider|scanner|preview)\b", re.IGNORECASE)
# Mail providers' image proxies: they fetch the pixel when the person opens the message (Gmail
# since 2013), so an open through them is real, just without device or location.
IMAGE_PROXY_AGENTS = ("googleimageproxy", "ggpht.com", "yahoomailproxy")
# What a person's mail client or browser sends: every browser says Mozilla/; Outlook desktop
# and the Outlook apps fetch images under their own names.
CLIENT_TOKENS = ("mozilla/", "opera/", "microsoft outlook", "microsoft office/", "outlook-")


@dataclass(frozen=True)
class Thresholds:
    after_send_seconds: float = 5.0  # a hit sooner than this after our send is a scanner's
    burst_links: int = 2  # this many distinct links of one message ...
    burst_seconds: float = 2.0  # ... hit within this window is not a person reading
    proxy_opens_are_human: bool = True


@dataclass(frozen=True)
class Hit:
    kind: str  # "open" | "click"
    user_agent: str | None
    at: datetime
    sent_at: datetime | None = None  # when our send went out (or started), if known
    url: str | None = None  # the clicked link
    # Earlier click hits on the same message: (when, url).
    earlier_clicks: list[tuple[datetime, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Verdict:
    machine: bool
    reason: str | None = None  # why it is machine; or a note on a human hit (image_proxy)


HUMAN = Verdict(False)


def classify(hit: Hit, limits: Thresholds) -> Verdict:
    ua = (hit.user_agent or "").strip()
    lowered = ua.lower()
    if not ua:
        return Verdict(True, NO_USER_AGENT)
    if any(agent in lowered for agent in IMAGE_PROXY_AGENTS):
        # A proxy fetches images, it never follows links: a "click" from it is a machine's.
        if hit.kind == "open" and limits.proxy_opens_are_human:
            return Verdict(False, IMAGE_PROXY)
        return Verdict(True, IMAGE_PROXY)
    if any(agent in lowered for agent in SCANNER_AGENTS) or _BOT_WORDS.search(ua):
        return Verdict(True, SCANNER)
    if not any(token in lowered for token in CLIENT_TOKENS):
        return Verdict(True, NOT_A_BROWSER)
    if hit.sent_at is not None:
        elapsed = (_aware(hit.at) - _aware(hit.sent_at)).total_seconds()
        if elapsed < limits.after_send_seconds:
            return Verdict(True, TOO_SOON)
    if hit.kind == "click" and hit.url is not None and limits.burst_links > 1:
        window_start = _aware(hit.at).timestamp() - limits.burst_seconds
        recent = {url for at, url in hit.earlier_clicks if _aware(at).timestamp() >= window_start}
        if len(recent | {hit.url}) >= limits.burst_links:
            return Verdict(True, LINK_BURST)
    return HUMAN


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
