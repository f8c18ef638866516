"""Every error of the API in one shape, RFC 9457 problem details (`application/problem+json`):
`type`, `title`, `status`, a `detail` sentence and a stable `code`; a 422 also lists the wrong
fields in `errors: [{loc, msg, type}]`. Mapped here, in one place, from HTTPException, FastAPI's
RequestValidationError and the services' refusals (services/errors.py); the middlewares that
answer before routing (security, body limits, idempotency) build their answers with `problem`.
The OpenAPI schema declares the same bodies (`problems`, `document`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from api.schemas import Problem, ValidationProblem
from services.errors import Conflict, Invalid, NotFound, Unavailable

PROBLEM_JSON = "application/problem+json"

# The `code` of a status, unless the answer names a more precise one.
CODES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "body_too_large",
    421: "misdirected_request",
    422: "validation_failed",
    503: "unavailable",
}

DESCRIPTIONS = {
    401: "Missing or invalid API key (`Authorization: Bearer <key>`)",
    403: "Keyless mode: a request from the network, or a cross-site browser request",
    404: "Not found",
    409: "The current state forbids it",
    413: "Request body larger than the limit",
    421: "Keyless mode: a Host header that is not a loopback name",
    422: "A field of the request is wrong (named in `errors`)",
    502: "The mail transport refused the message",
    503: "Unavailable now; retry later",
}


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON


def problem(
    status: int,
    detail: str,
    code: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> ProblemResponse:
    phrase = HTTPStatus(status).phrase
    code = code or CODES.get(status) or phrase.lower().replace(" ", "_").replace("-", "_")
    body: dict[str, Any] = {
        "type": f"urn:drip:problem:{code}",
        "title": phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    return ProblemResponse(body, status_code=status, headers=dict(headers) if headers else None)


def validation_problem(
    errors: Sequence[Mapping[str, Any]], headers: Mapping[str, str] | None = None
) -> ProblemResponse:
    """A 422 listing `{loc, msg, type}` of each wrong field; `detail` says them in a sentence."""
    listed = [{"loc": list(e["loc"]), "msg": str(e["msg"]), "type": str(e["type"])} for e in errors]
    detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in listed)
    return problem(422, detail or "the request is not valid", errors=listed, headers=headers)


def invalid(loc: Sequence[str | int], message: str) -> Invalid:
    """A 422 naming the offending field (raise it)."""
    return Invalid(loc, message)


def not_found(what: str, key: object) -> NotFound:
    return NotFound(what, key)


def conflict(reason: str) -> Conflict:
    return Conflict(reason)


def _answer(_request: Request, exc: Exception) -> ProblemResponse:
    if isinstance(exc, NotFound):
        return problem(404, str(exc))
    if isinstance(exc, Conflict):
        return problem(409, str(exc))
    if isinstance(exc, Unavailable):
        return problem(503, str(exc))
    if isinstance(exc, Invalid):
        return validation_problem([{"loc": exc.loc, "msg": exc.msg, "type": "value_error"}])
    if isinstance(exc, RequestValidationError):
        return validation_problem(exc.errors())
    assert isinstance(exc, HTTPException)
    if exc.status_code == 422 and isinstance(exc.detail, list):
        return validation_problem(exc.detail, exc.headers)
    return problem(exc.status_code, str(exc.detail), headers=exc.headers)


def install(app: FastAPI) -> None:
    for kind in (NotFound, Conflict, Invalid, Unavailable, RequestValidationError, HTTPException):
        app.add_exception_handler(kind, _answer)
    document(app)


# --- the OpenAPI schema ----------------------------------------------------------------------


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` of an operation: these error statuses, with their problem body."""
    return {
        status: {
            "model": ValidationProblem if status == 422 else Problem,
            "description": DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
        }
        for status in statuses
    }


def document(app: FastAPI) -> None:
    """Declare every error answer as the problem+json it is: FastAPI declares declared models as
    `application/json` and adds its own 422 body (`HTTPValidationError`), which we never answer."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _problem_responses(build())
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _problem_responses(schema: dict[str, Any]) -> None:
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (Problem, ValidationProblem):
        definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(definition.pop("$defs", {}))
        schemas[model.__name__] = definition
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation and "413" not in responses:
                responses["413"] = _problem_response(413)
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400 and _is_problem(response):
                    response["content"] = _problem_response(int(status))["content"]


def _is_problem(response: dict[str, Any]) -> bool:
    if "content" not in response:  # declared by its description only
        return True
    ref = response["content"].get("application/json", {}).get("schema", {}).get("$ref", "")
    return ref.rsplit("/", 1)[-1] in {"HTTPValidationError", "Problem", "ValidationProblem"}


def _problem_response(status: int) -> dict[str, Any]:
    model = "ValidationProblem" if status == 422 else "Problem"
    return {
        "description": DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
        "content": {PROBLEM_JSON: {"schema": {"$ref": f"#/components/schemas/{model}"}}},
    }
