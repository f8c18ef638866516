"""Errors in one JSON shape: `{"detail": ...}`, with a field location for every 422."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import HTTPException


def invalid(loc: Sequence[str | int], message: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, naming the offending field."""
    return HTTPException(
        status_code=422, detail=[{"loc": list(loc), "msg": message, "type": "value_error"}]
    )


def not_found(what: str, key: object) -> HTTPException:
    return HTTPException(status_code=404, detail=f"{what} {key} not found")


def conflict(reason: str) -> HTTPException:
    return HTTPException(status_code=409, detail=reason)
