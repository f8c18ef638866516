"""Leases: one holder at a time for a job that several processes could run (the API's outbox,
with several API replicas). A lease expires unless renewed, so a dead holder's job moves on."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from sqlalchemy import or_, update
from sqlalchemy.engine import CursorResult, Engine
from sqlmodel import col

from storage.db import session_scope
from storage.inserts import insert_ignoring_conflicts
from storage.models import Lease, utcnow


def hold(engine: Engine, name: str, holder: str, ttl: timedelta) -> bool:
    """Take or renew the lease `name` for `holder` until now + ttl; False while another holder's
    lease is live. One conditional UPDATE decides, so two contenders never both win."""
    now = utcnow()
    with session_scope(engine) as session:
        insert_ignoring_conflicts(
            session, Lease, [{"name": name, "holder": "", "expires_at": now}], returning="name"
        )
        taken = session.execute(
            update(Lease)
            .where(
                col(Lease.name) == name,
                or_(col(Lease.holder) == holder, col(Lease.expires_at) <= now),
            )
            .values(holder=holder, expires_at=now + ttl)
        )
        return cast(CursorResult[Any], taken).rowcount == 1


def release(engine: Engine, name: str, holder: str) -> None:
    """Give the lease up (at shutdown), so another holder takes over at once."""
    with session_scope(engine) as session:
        session.execute(
            update(Lease)
            .where(col(Lease.name) == name, col(Lease.holder) == holder)
            .values(expires_at=utcnow())
        )
