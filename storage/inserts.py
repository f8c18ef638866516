"""INSERT ... ON CONFLICT DO NOTHING RETURNING, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert
from sqlmodel import SQLModel


def dialect_insert(dialect: str) -> Callable[..., Any]:
    """The dialect's INSERT, the one with ON CONFLICT (SQLite and PostgreSQL alike)."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def insert_ignoring_conflicts(
    session: Session, model: type[SQLModel], rows: list[dict[str, Any]], returning: str = "id"
) -> list[Any]:
    """Insert rows, silently skipping those that collide with a unique constraint; return the
    `returning` column of the rows actually inserted. One statement: atomic and fast."""
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    return list(session.execute(_statement(model, dialect, returning), rows).scalars())


@functools.cache
def _statement(model: type[SQLModel], dialect: str, returning: str) -> Insert:
    """One statement per table, dialect and returned column, built once and compiled once; the
    rows go as executemany parameters: SQLAlchemy's "insertmanyvalues" batches them into
    multi-row INSERTs within the bound-parameter limits, much faster than compiling a VALUES
    clause per call (docs/performance.md)."""
    table = model.__table__  # type: ignore[attr-defined]
    statement: Insert = dialect_insert(dialect)(table).on_conflict_do_nothing()
    return statement.returning(table.c[returning])
