"""The frequency cap's check-and-reserve (services/frequency.py): a rolling window to the
second, idempotent per (enrollment, step), exempt campaigns neither blocked nor counted, and
atomic across OS processes on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from services import frequency
from storage import counters
from storage.counters import Metric
from storage.models import CapHold, CapSlot

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def set_cap(engine: Engine, max_messages: int, per_hours: float) -> None:
    with Session(engine) as session:
        frequency.set_cap(session, max_messages, per_hours)


def reserve(engine: Engine, enrollment_id: int, at: datetime, **options: object):  # type: ignore[no-untyped-def]
    values = {"email": "Maya@Example.com", "step_id": 1, "campaign_id": 7, **options}
    return frequency.reserve(engine, enrollment_id=enrollment_id, at=at, **values)  # type: ignore[arg-type]


def slots(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(CapSlot)).one()


def test_a_rolling_window_to_the_second(engine: Engine) -> None:
    set_cap(engine, 2, 1)
    assert reserve(engine, 1, T0).granted
    assert reserve(engine, 2, T0 + timedelta(minutes=10)).granted
    refused = reserve(engine, 3, T0 + timedelta(minutes=20))
    assert not refused.granted
    assert refused.next_free_at == T0 + timedelta(hours=1)  # when the first one leaves
    assert "2 of 2 messages in 1 h" in refused.reason
    assert not reserve(engine, 3, T0 + timedelta(hours=1) - timedelta(seconds=1)).granted
    assert reserve(engine, 3, T0 + timedelta(hours=1)).granted  # to the second
    # the same address in another spelling is the same address
    assert not reserve(engine, 4, T0 + timedelta(hours=1), email=" maya@example.COM").granted


def test_a_retried_reservation_is_granted_again_and_counted_once(engine: Engine) -> None:
    set_cap(engine, 1, 24)
    assert reserve(engine, 1, T0).granted
    again = reserve(engine, 1, T0 + timedelta(minutes=1))
    assert again.granted and "already reserved" in again.reason
    assert slots(engine) == 1
    assert not reserve(engine, 2, T0 + timedelta(minutes=2)).granted


def test_exempt_campaigns_are_never_blocked_nor_counted(engine: Engine) -> None:
    set_cap(engine, 1, 24)
    assert reserve(engine, 1, T0).granted
    for n in range(2, 5):
        assert reserve(engine, n, T0 + timedelta(minutes=n), exempt=True).granted
    assert slots(engine) == 1
    assert not reserve(engine, 9, T0 + timedelta(hours=1)).granted


def test_without_a_cap_nothing_is_counted_and_counting_starts_when_one_is_set(
    engine: Engine,
) -> None:
    assert reserve(engine, 1, T0).granted
    assert slots(engine) == 0  # no cap: a read, nothing written
    set_cap(engine, 1, 24)
    assert reserve(engine, 2, T0 + timedelta(hours=1)).granted
    assert not reserve(engine, 3, T0 + timedelta(hours=2)).granted


def test_held_steps_are_counted_once_for_the_funnel(engine: Engine) -> None:
    set_cap(engine, 1, 24)
    assert reserve(engine, 1, T0).granted
    for minute in (1, 2, 3):  # a deferred step asking again and again counts once
        assert not reserve(engine, 2, T0 + timedelta(minutes=minute), step_id=5).granted
    assert not reserve(engine, 3, T0, step_id=5, on_cap="skip").granted
    with Session(engine) as session:
        counts = counters.read(session, 7)
        assert counts[(5, Metric.DEFERRED_BY_CAP)] == 1
        assert counts[(5, Metric.SKIPPED_BY_CAP)] == 1
        assert counters.from_rows(session, 7) == {k: v for k, v in counts.items() if v}


RESERVE_MANY = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from services import frequency
from storage.db import make_engine

url, first, n, start, at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
engine = make_engine(url)
when = datetime.fromisoformat(at)

def one(i):
    return frequency.reserve(
        engine, email="shared@example.com", enrollment_id=first + i, step_id=1,
        campaign_id=1 + i % 3, at=when, exempt=(i % 10 == 9),
    ).granted, i % 10 == 9

with ThreadPoolExecutor(8) as pool:
    time.sleep(max(0.0, start - time.time()))  # both processes start together
    results = list(pool.map(one, range(n)))
print(json.dumps({"granted": sum(g for g, exempt in results if not exempt),
                  "exempt_granted": sum(g for g, exempt in results if exempt)}))
"""


def test_concurrent_reservations_from_two_processes_grant_exactly_the_cap(
    engine: Engine, database_url: str
) -> None:
    """Many journeys of several campaigns due for one address at the same instant, reserved
    from two OS processes at once: exactly `max_messages` granted, the rest held."""
    set_cap(engine, 5, 24)
    start = time.time() + 3
    per_process = 30
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RESERVE_MANY,
                database_url,
                str(first),
                str(per_process),
                str(start),
                T0.isoformat(),
            ],  # fmt: skip
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for first in (1000, 2000)
    ]
    outputs = [json.loads(p.communicate(timeout=120)[0]) for p in processes]
    assert all(p.returncode == 0 for p in processes)
    assert sum(o["granted"] for o in outputs) == 5
    assert sum(o["exempt_granted"] for o in outputs) == 2 * 3  # never blocked
    assert slots(engine) == 5  # and never counted
    with Session(engine) as session:
        held = session.exec(
            select(func.count()).select_from(CapHold).where(col(CapHold.outcome) == "deferred")
        ).one()
    assert held == 2 * per_process - 2 * 3 - 5


def test_a_message_counts_from_its_actual_send(engine: Engine) -> None:
    """Reserved at 09:00, sent at 09:10 (a send-rate queue, say): the slot frees at 09:10."""
    set_cap(engine, 1, 24)
    assert reserve(engine, 1, T0).granted
    with Session(engine) as session:
        frequency.count_from_send(session, 1, 1, T0 + timedelta(minutes=10))
        session.commit()
    day = T0 + timedelta(hours=24)
    refused = reserve(engine, 2, day + timedelta(minutes=5))
    assert not refused.granted and refused.next_free_at == day + timedelta(minutes=10)
    assert reserve(engine, 2, day + timedelta(minutes=10)).granted
