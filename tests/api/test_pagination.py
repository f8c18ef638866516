"""Cursor pages (api/pagination.py), the shape of new list endpoints: walking a list page by page
over a real table gives every row once, in order, ties broken by the id, also when rows are
added during the walk; a cursor the API did not give is a 422 naming `cursor`."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from api import pagination
from services.errors import Invalid
from storage.models import Template

COLUMNS = (col(Template.name), col(Template.id))


def walk(engine: Engine, limit: int, add_after_first: str | None = None) -> list[int]:
    seen: list[int] = []
    cursor: str | None = None
    while True:
        with Session(engine) as session:
            rows = session.exec(
                select(Template)
                .where(pagination.after(COLUMNS, pagination.decode(cursor, 2)))
                .order_by(*COLUMNS)
                .limit(limit + 1)
            ).all()
            result = pagination.page(rows, limit, lambda t: (t.name, t.id or 0), lambda t: t.id)
            if add_after_first and not seen:
                session.add(Template(name=add_after_first, html="x"))
                session.commit()
        seen += [i for i in result.items if i is not None]
        cursor = result.next_cursor
        if cursor is None:
            return seen


def test_pages_give_every_row_once_in_order(engine: Engine) -> None:
    with Session(engine) as session:
        for name in ["b", "a", "b", "c", "a", "b", "d"]:
            session.add(Template(name=name, html="x"))
        session.commit()
        expected = [t.id for t in session.exec(select(Template).order_by(*COLUMNS))]
    for limit in (1, 2, 3, 7, 100):
        assert walk(engine, limit) == expected, limit
    # A row added behind the walk is not seen, one ahead of it is, and nothing repeats.
    seen = walk(engine, 2, add_after_first="zz")
    assert seen[: len(expected)] == expected and len(seen) == len(expected) + 1


@pytest.mark.parametrize(
    "cursor", ["", "not base64!", pagination.encode(("a",)), "WzEsIHRydWVd", "e30"]
)
def test_a_cursor_the_api_did_not_give_is_a_422(cursor: str) -> None:
    with pytest.raises(Invalid) as refused:
        pagination.decode(cursor, 2)
    assert refused.value.loc == ["query", "cursor"]
    assert pagination.decode(pagination.encode(("a", 3)), 2) == ("a", 3)
