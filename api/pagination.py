"""The one pagination shape for new list endpoints: a cursor page `{items, next_cursor}`
(schemas.CursorPage) over `?limit=&cursor=`. Keyset pagination: the cursor is the sort key of
the page's last row, and the next page is the rows after it, so a page never skips or repeats a
row when rows are added meanwhile, and costs the same however deep it is (an offset does not).
The cursor is opaque to clients (base64url of the key as JSON); a cursor we did not give is a
422 naming `cursor`.

A route: `rows = query.where(after(columns, decode(cursor))).order_by(*columns).limit(limit + 1)`,
then `page(rows, limit, key, item)`."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import Query
from sqlalchemy import ColumnElement, true, tuple_

from api.schemas import CursorPage
from services.errors import Invalid

Row = TypeVar("Row")
Item = TypeVar("Item")
Key = tuple[str | int, ...]  # JSON-safe sort-key values (ids, ISO timestamps)

LimitQuery = Annotated[int, Query(ge=1, le=1000, description="items per page")]
CursorQuery = Annotated[
    str | None, Query(max_length=500, description="`next_cursor` of the previous page")
]


def encode(key: Key) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode(cursor: str | None, width: int) -> Key | None:
    """The key a cursor holds (None for the first page); `width` values, each a str or int."""
    if cursor is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        key = None
    ok = isinstance(key, list) and len(key) == width
    if not ok or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in key):
        raise Invalid(["query", "cursor"], "not a cursor of this list: pass `next_cursor` back")
    return tuple(key)


def after(columns: Sequence[Any], key: Key | None) -> ColumnElement[bool]:
    """The rows after `key` in the order of `columns` (ascending)."""
    if key is None:
        return true()
    return tuple_(*columns) > tuple_(*key)


def page(
    rows: Sequence[Row], limit: int, key: Callable[[Row], Key], item: Callable[[Row], Item]
) -> CursorPage[Item]:
    """`rows`: up to `limit + 1` rows after the cursor, in key order: the extra one says there is
    a next page."""
    shown = list(rows[:limit])
    more = len(rows) > limit
    return CursorPage[Item](
        items=[item(r) for r in shown], next_cursor=encode(key(shown[-1])) if more else None
    )
