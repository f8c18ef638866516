"""INSERT ... ON CONFLICT DO NOTHING RETURNING, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel


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
    inserted: list[Any] = []
    # Chunks keep each statement under the databases' bound-parameter limits.
    size = max(1, 30000 // max(1, len(rows[0])))
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        statement = insert(table).values(chunk).on_conflict_do_nothing()
        inserted.extend(session.execute(statement.returning(table.c[returning])).scalars())
    return inserted
