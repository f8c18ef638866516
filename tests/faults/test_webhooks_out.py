"""Journey events out survive a worker crash mid-retry: the receiver refuses every POST (500)
of `step.sent` and `journey.converted` events, the worker is SIGKILLed while Temporal holds
their retries, nothing is attempted while no worker runs, and once a worker is back (and the
receiver takes them) every event arrives, signed, and is recorded delivered: none lost.
Temporal, the API and the worker are separate processes (tests/faults/conftest.py)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unique_domain
from tests.faults.conftest import RecordingSink, Stack, http, open_stack, until
from tests.support.receiver import Receiver

pytestmark = pytest.mark.slow

RECIPIENTS = 5
EVENTS = 2 * RECIPIENTS  # each: step.sent, then journey.converted


@pytest.fixture
def hooks_stack(tmp_path: Path, sink: RecordingSink) -> Iterator[Stack]:
    url = f"sqlite:///{tmp_path / 'drip.db'}"
    with open_stack(tmp_path, sink, url, DRIP_WEBHOOK_ALLOW_PRIVATE="true") as system:
        yield system


def signed_body(request: Any, secret: str) -> dict[str, Any]:
    fields = dict(p.split("=", 1) for p in request.headers["Drip-Signature"].split(","))
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + request.body, hashlib.sha256)
    assert hmac.compare_digest(expected.hexdigest(), fields["v1"])
    body: dict[str, Any] = json.loads(request.body)
    return body


async def test_deliveries_refused_then_worker_killed_arrive_after_the_restart(
    hooks_stack: Stack, say: Callable[[str], None]
) -> None:
    stack = hooks_stack
    with Receiver() as receiver:
        receiver.otherwise = 500  # refuse everything, for now
        async with http(stack.url) as api:
            made = await api.post(
                "/api/webhook-subscriptions",
                json={"url": receiver.url, "events": ["step.sent", "journey.converted"]},
            )
            assert made.status_code == 201, made.text
            sub = made.json()

            async def rows_where(each: Callable[[Any], bool]) -> list[dict[str, Any]] | None:
                """Every event's delivery row, if each satisfies `each`: the worker records an
                attempt after the receiver's answer reaches it, so callers wait on this."""
                page = await api.get(f"/api/webhook-subscriptions/{sub['id']}/deliveries")
                rows: list[dict[str, Any]] = page.json()["items"]
                return rows if len(rows) == EVENTS and all(map(each, rows)) else None

            template = await api.post("/api/templates", json={"name": "t", "html": "<p>Hi</p>"})
            steps = [{"subject": "one", "delay_hours": 0, "template_id": template.json()["id"]},
                     {"subject": "two", "delay_hours": 24, "template_id": template.json()["id"]}]  # fmt: skip
            created = await api.post("/api/campaigns", json={
                "name": "hooks", "steps": steps,
                "goal": {"event": "order.completed", "window_hours": 72}})  # fmt: skip
            assert created.status_code == 201, created.text
            cid = created.json()["id"]
            await api.patch(f"/api/campaigns/{cid}", json={"status": "active"})
            domain = unique_domain()
            emails = [f"r{n}@{domain}" for n in range(RECIPIENTS)]
            await api.post(f"/api/campaigns/{cid}/recipients",
                           json={"recipients": [{"email": e} for e in emails]})  # fmt: skip
            await until(lambda: len({r.body for r in receiver.snapshot()}) >= RECIPIENTS, 60,
                        "each step.sent refused once")  # fmt: skip
            for email in emails:
                tracked = await api.post("/api/track", json={
                    "email": email, "event": "order.completed", "event_id": f"o-{email}"})  # fmt: skip
                assert tracked.status_code == 202, tracked.text
            await until(lambda: len({r.body for r in receiver.snapshot()}) >= EVENTS, 60,
                        "each journey.converted refused once")  # fmt: skip
            await until(lambda: rows_where(lambda r: r["attempts"] >= 1), 30,
                        "each refusal recorded")  # fmt: skip
            stack.kill_worker()
            refused = receiver.snapshot()
            say(f"{len(refused)} POSTs of {EVENTS} events refused (500), then the worker killed")
            await asyncio.sleep(12)  # retries fall due with no worker to run them
            assert len(receiver.snapshot()) == len(refused), "attempted with no worker running"
            receiver.otherwise = 200
            stack.worker.start()

            def all_taken() -> bool:
                return len({r.body for r in receiver.snapshot() if r.answered == 200}) == EVENTS

            await until(all_taken, 120, "every event to be taken after the restart")
            rows = await until(lambda: rows_where(lambda r: r["status"] == "delivered"), 30,
                               "every delivery to be recorded delivered")  # fmt: skip

    taken = [r for r in receiver.snapshot() if r.answered == 200]
    events = {b["id"]: b for b in (signed_body(r, sub["secret"]) for r in taken)}
    assert sorted((b["type"], b["data"]["email"]) for b in events.values()) == sorted(
        [(t, e) for t in ("journey.converted", "step.sent") for e in emails]
    )  # none lost
    assert {r.body for r in refused} == {r.body for r in taken}  # the same events, retried
    assert all(r["attempts"] >= 2 for r in rows), rows
    say(f"after the restart: {len(events)} of {EVENTS} delivered, signed; attempts "
        f"{sorted(r['attempts'] for r in rows)}")  # fmt: skip
