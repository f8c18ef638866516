"""The frequency cap under contention: journeys of many campaigns due for one address at the
same instant, run by two worker processes, on SQLite and on PostgreSQL: exactly `max_messages`
are sent in the window, the rest skipped (on_cap skip) or waiting for a slot (defer)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select

from storage.models import Delivery, Enrollment
from tests.conftest import unique_domain
from tests.faults.conftest import SECOND, Proc, RecordingSink, Stack, open_stack, until

CAMPAIGNS = 12  # half skip, half defer
MAX_MESSAGES = 3


@pytest.fixture
def two_workers(tmp_path: Path, sink: RecordingSink, database_url: str) -> Iterator[Stack]:
    """Temporal, the API and two worker processes on one database."""
    with open_stack(tmp_path, sink, database_url) as system:
        second = Proc("worker-2", [sys.executable, "worker.py"], system.worker.env,
                      tmp_path / "worker-2.log")  # fmt: skip
        second.start()
        try:
            yield system
        finally:
            second.stop()


async def test_exactly_max_messages_go_out_from_two_workers(
    two_workers: Stack, sink: RecordingSink
) -> None:
    system = two_workers
    address = f"maya@{unique_domain()}"
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as api:
        cap = {"max_messages": MAX_MESSAGES, "per_hours": 24}
        assert (await api.put("/api/settings/frequency-cap", json=cap)).status_code == 200
        template = await api.post("/api/templates", json={"name": "t", "html": "<p>Hi</p>"})
        ids: dict[int, str] = {}
        for n in range(CAMPAIGNS):
            on_cap = "skip" if n % 2 else "defer"
            body: dict[str, Any] = {
                "name": f"campaign {n}",
                "on_cap": on_cap,
                # due together: enrolled within a second, due 8 s later
                "steps": [{"subject": f"campaign {n}", "delay_hours": 8 * SECOND,
                           "template_id": template.json()["id"]}],
            }  # fmt: skip
            created = await api.post("/api/campaigns", json=body)
            assert created.status_code == 201, created.text
            cid = created.json()["id"]
            assert (await api.patch(f"/api/campaigns/{cid}", json={"status": "active"})).is_success
            ids[cid] = on_cap
        for cid in ids:
            enrolled = await api.post(f"/api/campaigns/{cid}/recipients",
                                      json={"recipients": [{"email": address}]})  # fmt: skip
            assert enrolled.json()["enrolled"] == 1, enrolled.text

        async def settled() -> dict[int, str] | None:
            """Each journey: sent, skipped, or waiting for the cap; None while any is pending."""
            outcome = {}
            for cid, on_cap in ids.items():
                view = (await api.get(f"/api/campaigns/{cid}/recipients/{address}")).json()
                decided = [s["decision"] for s in view["steps"] if s.get("delivery_status") in
                           ("sent", "skipped")]  # fmt: skip
                waiting = view.get("waiting_for") or {}
                if decided:
                    outcome[cid] = decided[0]
                elif waiting.get("kind") == "frequency_cap" and on_cap == "defer":
                    outcome[cid] = "deferred"
                else:
                    return None
            return outcome

        outcome = await until(settled, 90, "every journey sent, skipped or deferred", every=1)
    sent = [a for a in sink.snapshot() if a.to == address]
    assert len(sent) == MAX_MESSAGES, [a.subject for a in sent]
    assert sorted(outcome.values()).count("sent") == MAX_MESSAGES
    for cid, on_cap in ids.items():
        if outcome[cid] != "sent":
            assert outcome[cid] == ("skipped" if on_cap == "skip" else "deferred"), (cid, outcome)
    with Session(system.engine) as session:
        rows = session.exec(
            select(Delivery)
            .join(Enrollment, Enrollment.id == Delivery.enrollment_id)  # type: ignore[arg-type]
            .where(Enrollment.email == address, Delivery.status == "sent")
        ).all()
    assert len(rows) == MAX_MESSAGES
