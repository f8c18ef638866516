"""An integer too large for the database answers 422 naming the parameter, not 500.

Ids, offsets and limits are plain `int`s in the routes, and Python ints have no bound: SQLite
refuses to bind one past 2**63-1 (`OverflowError`), PostgreSQL one past what the column or
clause holds (SQLSTATE 22003). Either way the request names something that cannot exist.
Found by the API fuzz test (tests/api/test_schemathesis.py)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from sqlalchemy.exc import DataError
from starlette.responses import Response

from api.errors import validation_problem

LARGEST = 2**63 - 1
NUMERIC_VALUE_OUT_OF_RANGE = "22003"


def install(app: FastAPI) -> None:
    app.add_exception_handler(OverflowError, _sqlite_overflow)  # type: ignore[arg-type]
    app.add_exception_handler(DataError, _postgres_out_of_range)  # type: ignore[arg-type]


async def _sqlite_overflow(request: Request, exc: OverflowError) -> Response:
    if "SQLite INTEGER" not in str(exc):
        raise exc  # any other overflow is a bug of ours: a 500, logged
    return _answer(request)


async def _postgres_out_of_range(request: Request, exc: DataError) -> Response:
    if getattr(exc.orig, "sqlstate", None) != NUMERIC_VALUE_OUT_OF_RANGE:
        raise exc
    return _answer(request)


def _answer(request: Request) -> Response:
    params = [("path", k, v) for k, v in request.path_params.items()]
    params += [("query", k, v) for k, v in request.query_params.multi_items()]
    locs = [[where, name] for where, name, value in params if _too_large(value)] or [["body"]]
    message = f"out of range: integers here are at most {LARGEST} in absolute value"
    return validation_problem([{"loc": loc, "msg": message, "type": "value_error"} for loc in locs])


def _too_large(value: object) -> bool:
    try:
        return abs(int(str(value))) > LARGEST
    except ValueError:
        return False
