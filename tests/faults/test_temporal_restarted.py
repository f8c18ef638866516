"""The Temporal dev server stopped and started again (same SQLite file) mid-campaign: the worker
and the API reconnect by themselves, enrollments accepted while it was down start once it is back
(the API's outbox), and every journey finishes with every message delivered exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tests.faults.conftest import (
    Campaign,
    Stack,
    all_finished,
    enroll,
    http,
    start_campaign,
    tally,
    timeline,
    until,
)

pytestmark = pytest.mark.slow

RECIPIENTS = 80
LATE = 20  # enrolled while the server is down
DELAYS = [0, 3, 3]
DOWN_SECONDS = 10


async def test_temporal_server_restarted_mid_campaign(
    stack: Stack, say: Callable[[str], None]
) -> None:
    async with http(stack.url) as api:
        started = time.time()
        campaign = await start_campaign(api, RECIPIENTS, DELAYS, "server-restart")
        total = len(campaign.expected)
        await until(lambda: stack.sink.count() >= total // 3, 120, "a third of the messages")
        at_stop = stack.sink.count()
        stack.temporal.stop()  # SIGTERM, and wait for it to exit
        stopped = time.time()
        late = [f"late{n:02d}@{campaign.emails[0].split('@')[1]}" for n in range(LATE)]
        enroll_started = time.monotonic()
        await enroll(api, campaign.id, late)  # rows stored; their journeys cannot start yet
        enroll_took = time.monotonic() - enroll_started
        await asyncio.sleep(max(0.0, DOWN_SECONDS - (time.time() - stopped)))
        while_down = stack.sink.count() - at_stop
        stack.temporal.start()  # same port, same database file
        everyone = Campaign(campaign.id, campaign.emails + late, campaign.subjects)
        statuses = await all_finished(stack.engine, everyone, timeout=240)
    counted = tally(stack.engine, stack.sink, everyone, kills=[])
    say(f"{RECIPIENTS} recipients x {len(DELAYS)} steps; Temporal stopped after {at_stop} messages "
        f"for {DOWN_SECONDS} s ({while_down} messages went out meanwhile: sends already running); "
        f"{LATE} more enrolled while it was down (answered in {enroll_took:.1f} s); "
        f"finished: {dict(statuses)}; worker restarted {stack.worker.starts - 1} times, "
        f"API {stack.api.starts - 1} times")  # fmt: skip
    say(f"messages per 10 s: {timeline(stack.sink, started)}")
    for line in counted.lines():
        say(line)
    assert stack.worker.alive and stack.api.alive, "the worker and API reconnect, never exit"
    assert statuses == {"completed": RECIPIENTS + LATE}
    assert counted.as_promised and not counted.duplicates and not counted.uncertain
