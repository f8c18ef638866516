"""INSERT ... ON CONFLICT DO NOTHING RETURNING, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlmodel import SQLModel


def insert_ignoring_conflicts(
    session: Session, model: type[SQLModel], rows: list[dict[str, Any]], returning: str = "id"
) -> list[Any]:
    """Insert rows, silently skipping those that collide with a unique constraint; return the
    `returning` column of the rows actually inserted. One statement: atomic and fast."""
    if not rows:
        return []
    table = model.__table__  # type: ignore[attr-defined]
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # One statement compiled once, the rows passed as executemany parameters: SQLAlchemy's
    # "insertmanyvalues" batches them into multi-row INSERTs within the bound-parameter limits,
    # much faster than compiling a VALUES clause per call (docs/performance.md).
    statement = insert(table).on_conflict_do_nothing().returning(table.c[returning])
    return list(session.execute(statement, rows).scalars())
