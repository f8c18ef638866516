"""The outbox loop's lease (services/outbox.py): a process that stops gives the lease up, so the
next one (a restarted API, a replica) takes over at once instead of after LEASE_TTL."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from services import outbox
from storage import leases


async def test_stopped_while_taking_the_lease_the_outbox_gives_it_up(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    taking = threading.Event()
    real_hold = leases.hold

    def slow_hold(*args: Any) -> bool:
        taken = real_hold(*args)
        taking.set()
        time.sleep(0.3)  # the shutdown's cancel lands while this thread call is finishing
        return taken

    monkeypatch.setattr(leases, "hold", slow_hold)
    # Never reached: the round is cancelled before it starts.
    loop = asyncio.create_task(outbox.run_outbox(engine, None, None, interval=60))  # type: ignore[arg-type]
    await asyncio.to_thread(taking.wait, 5)
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert real_hold(engine, outbox.OUTBOX_LEASE, "next-process", timedelta(seconds=60))
