"""Errors in one JSON shape: `{"detail": ...}`, with a field location for every 422."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from services.errors import Conflict, Invalid, NotFound, Unavailable


def invalid(loc: Sequence[str | int], message: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, naming the offending field."""
    return HTTPException(
        status_code=422, detail=[{"loc": list(loc), "msg": message, "type": "value_error"}]
    )


def not_found(what: str, key: object) -> HTTPException:
    return HTTPException(status_code=404, detail=f"{what} {key} not found")


def conflict(reason: str) -> HTTPException:
    return HTTPException(status_code=409, detail=reason)


def _answer(_request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, NotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)
    if isinstance(exc, Conflict):
        return JSONResponse({"detail": str(exc)}, status_code=409)
    if isinstance(exc, Unavailable):
        return JSONResponse({"detail": str(exc)}, status_code=503)
    assert isinstance(exc, Invalid)
    detail = [{"loc": exc.loc, "msg": exc.msg, "type": "value_error"}]
    return JSONResponse({"detail": detail}, status_code=422)


def install(app: FastAPI) -> None:
    """The services' refusals (services/errors.py) as HTTP answers, in one place."""
    for kind in (NotFound, Conflict, Invalid, Unavailable):
        app.add_exception_handler(kind, _answer)
