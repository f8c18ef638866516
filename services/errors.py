"""What a service refuses, in its own words; api/ maps these to 404, 409, 422 and 503 in one place.
Services never raise HTTPException."""

from __future__ import annotations

from collections.abc import Sequence


class ServiceError(Exception):
    pass


class NotFound(ServiceError):
    def __init__(self, what: str, key: object) -> None:
        super().__init__(f"{what} {key} not found")


class Conflict(ServiceError):
    """The request is valid but the current state forbids it."""


class Unavailable(ServiceError):
    """A system the service needs (Temporal) did not do its part: nothing was half-done, and the
    same request may be retried."""


class Invalid(ServiceError):
    """A field of the request is wrong: `loc` names it the way FastAPI's own 422s do."""

    def __init__(self, loc: Sequence[str | int], msg: str) -> None:
        super().__init__(msg)
        self.loc = list(loc)
        self.msg = msg
