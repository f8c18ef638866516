"""Journey events out survive a worker crash mid-retry: the receiver refuses the first POSTs
(500), the worker is SIGKILLed while Temporal holds the retries, nothing is attempted while no
worker runs, and once a worker is back every event arrives, signed, and is recorded delivered.
Temporal, the API and the worker are separate processes (tests/faults/conftest.py)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import RecordingSink, Stack, http, open_stack, start_campaign, until
from tests.support.receiver import Receiver

pytestmark = pytest.mark.slow

RECIPIENTS = 5


@pytest.fixture
def hooks_stack(tmp_path: Path, sink: RecordingSink) -> Iterator[Stack]:
    url = f"sqlite:///{tmp_path / 'drip.db'}"
    with open_stack(tmp_path, sink, url, DRIP_WEBHOOK_ALLOW_PRIVATE="true") as system:
        yield system


async def test_deliveries_refused_then_worker_killed_arrive_after_the_restart(
    hooks_stack: Stack, say: Callable[[str], None]
) -> None:
    stack = hooks_stack
    with Receiver() as receiver:
        receiver.answers = [500] * RECIPIENTS
        async with http(stack.url) as api:
            made = await api.post(
                "/api/webhook-subscriptions", json={"url": receiver.url, "events": ["step.sent"]}
            )
            assert made.status_code == 201, made.text
            sub = made.json()
            campaign = await start_campaign(api, RECIPIENTS, [0], "hooks")
            await until(lambda: len(receiver.snapshot()) >= RECIPIENTS, 60, "the refused POSTs")
            stack.kill_worker()
            refused = receiver.snapshot()
            say(f"{len(refused)} POSTs refused (500), then the worker was killed")
            await asyncio.sleep(12)  # the first retries fall due (5 s) with no worker to run them
            assert len(receiver.snapshot()) == len(refused), "attempted with no worker running"
            stack.worker.start()

            def all_taken() -> bool:
                return len({r.body for r in receiver.snapshot() if r.answered == 200}) == RECIPIENTS

            await until(all_taken, 90, "every event to be taken after the restart")
            page = (await api.get(f"/api/webhook-subscriptions/{sub['id']}/deliveries")).json()

    taken = [r for r in receiver.snapshot() if r.answered == 200]
    events = {}
    for request in taken:
        fields = dict(p.split("=", 1) for p in request.headers["Drip-Signature"].split(","))
        signed = fields["t"].encode() + b"." + request.body
        expected = hmac.new(sub["secret"].encode(), signed, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(expected, fields["v1"])
        body = json.loads(request.body)
        events[body["id"]] = body
    assert {b["data"]["email"] for b in events.values()} == set(campaign.emails)  # none lost
    assert {r.body for r in refused} == {r.body for r in taken}  # the same events, retried
    rows = page["items"]
    assert len(rows) == RECIPIENTS and {r["status"] for r in rows} == {"delivered"}
    assert all(r["attempts"] >= 2 for r in rows), rows
    say(f"after the restart: {len(events)} of {RECIPIENTS} delivered, signed; attempts "
        f"{sorted(r['attempts'] for r in rows)}")  # fmt: skip
