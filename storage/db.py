"""Engine and sessions: SQLite by default, any SQLAlchemy URL (PostgreSQL) by setting."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from storage import models  # noqa: F401  (registers the tables on SQLModel.metadata)

# The schema comes only from the migrations (storage/migrate.py), never from create_all.


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the API read while the worker writes; busy_timeout waits instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


# One SQLite writer at a time per process and database file. SQLite takes one writer anyway,
# and its busy handler polls for the lock with sleeps: concurrent sends spent most of their
# time asleep (docs/performance.md). A lock hands over at once.
class WriterQueue:
    """A reentrant lock whose urgent holders go before ordinary waiters: recording a message as
    sent must not queue behind the next sends' preparation, since a crash before that commit is
    the one moment a message can go out twice."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._owner: int | None = None
        self._depth = 0
        self._urgent_waiting = 0

    @contextmanager
    def hold(self, urgent: bool = False) -> Iterator[None]:
        me = threading.get_ident()
        with self._changed:
            if self._owner == me:
                self._depth += 1
            else:
                self._urgent_waiting += urgent
                while self._owner is not None or (not urgent and self._urgent_waiting):
                    self._changed.wait()
                self._urgent_waiting -= urgent
                self._owner, self._depth = me, 1
        try:
            yield
        finally:
            with self._changed:
                self._depth -= 1
                if self._depth == 0:
                    self._owner = None
                    self._changed.notify_all()


_SQLITE_WRITERS: dict[str, WriterQueue] = {}


def _one_writer(engine: Engine, urgent: bool) -> AbstractContextManager[None]:
    if engine.dialect.name != "sqlite":
        return nullcontext()
    return _SQLITE_WRITERS.setdefault(str(engine.url), WriterQueue()).hold(urgent)


@contextmanager
def session_scope(engine: Engine, *, urgent: bool = False) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error: no half-written state.
    `urgent`: on SQLite, go before the writers already waiting in this process."""
    with _one_writer(engine, urgent), Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
