"""The SMTP server refusing connections for a minute mid-campaign: sends fail and are retried
with backoff, journeys wait rather than fail or exit, and once it listens again every message
arrives, none lost and none twice."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import pytest
from sqlmodel import Session, select

from storage.models import Delivery, Enrollment
from tests.faults.conftest import (
    Stack,
    all_finished,
    http,
    start_campaign,
    tally,
    timeline,
    until,
)

pytestmark = pytest.mark.slow

RECIPIENTS = 60
DELAYS = [0, 3, 3]
DOWN_SECONDS = 60


async def test_smtp_refusing_connections_for_a_minute(
    stack: Stack, say: Callable[[str], None]
) -> None:
    async with http(stack.url) as api:
        started = time.time()
        campaign = await start_campaign(api, RECIPIENTS, DELAYS, "smtp-down")
        total = len(campaign.expected)
        await until(lambda: stack.sink.count() >= total // 3, 120, "a third of the messages")
        stack.sink.refuse()
        at_refuse, refused_at = stack.sink.count(), time.time()
        await asyncio.sleep(DOWN_SECONDS - 10)
        with Session(stack.engine) as session:
            waiting = Counter(d.status for d in session.exec(
                select(Delivery).where(Delivery.campaign_id == campaign.id)))  # fmt: skip
            journeys = Counter(e.status for e in session.exec(
                select(Enrollment).where(Enrollment.campaign_id == campaign.id)))  # fmt: skip
        await asyncio.sleep(max(0.0, DOWN_SECONDS - (time.time() - refused_at)))
        stack.sink.accept()
        back_at = time.time()
        statuses = await all_finished(stack.engine, campaign, timeout=240)
        first_after = min((a.at for a in stack.sink.snapshot() if a.at >= back_at), default=None)
    counted = tally(stack.engine, stack.sink, campaign, kills=[])
    say(f"{RECIPIENTS} recipients x {len(DELAYS)} steps; SMTP refused connections for "
        f"{back_at - refused_at:.0f} s after {at_refuse} messages; near the end of the outage: "
        f"deliveries {dict(waiting)}, journeys {dict(journeys)}; first message "
        f"{(first_after - back_at) if first_after else float('nan'):.1f} s after it came back; "
        f"finished: {dict(statuses)}")  # fmt: skip
    say(f"messages per 10 s: {timeline(stack.sink, started)}")
    for line in counted.lines():
        say(line)
    assert set(journeys) <= {"active", "completed"}, "an outage must not end (bounce) a journey"
    # Caught by the outage: refused before the point of no return, their leases given back.
    assert waiting["pending"] > 0 and not waiting["handing_over"], dict(waiting)
    assert statuses == {"completed": RECIPIENTS}
    assert counted.as_promised and not counted.duplicates and not counted.uncertain
