"""The command line's HTTP client for the drip API: base URL and bearer key from its own
settings (cli/settings.py), retries with backoff on connection errors and 5xx answers, and an
`Idempotency-Key` on every POST so a retry never acts twice.

A request is retried only when repeating it is safe: a connection that could not be opened
(nothing was sent), a GET/PUT/PATCH/DELETE (the same change twice is one change), or a POST the
API replays from its `Idempotency-Key` (`IDEMPOTENT_POSTS`, the routes with
`dependencies=[Idempotent]` in api/routes/) or that is idempotent by nature. Any other POST
that may have reached the API (a resend, a clone) is not repeated: the error says so."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from cli.settings import ClientSettings

RETRIES = 4  # attempts in all
BACKOFF_SECONDS = 0.5  # doubled after each failed attempt: 0.5, 1, 2
IDEMPOTENT_POSTS = re.compile(
    r"^/api/(campaigns|templates|events|campaigns/\d+/recipients|track|track/batch"  # by their key
    r"|suppressions|templates/\d+/preview|campaigns/steps/reorder)$"  # the same twice
)


class ApiError(Exception):
    """A refusal or failure of the API, with its message for a human."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiClient:
    def __init__(
        self, settings: ClientSettings, timeout: float = 120.0, backoff: float = BACKOFF_SECONDS
    ) -> None:
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self.http = httpx.Client(base_url=settings.api_url, headers=headers, timeout=timeout)
        self.backoff = backoff

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.http.close()

    def get(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        return self._send("GET", path, params=query)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        # One key for this call and all its retries: the API answers a retry with the first answer.
        key = {"Idempotency-Key": str(uuid.uuid4())}
        return self._send("POST", path, json=body, params=params, headers=key)

    def upload(self, path: str, file: Path) -> Any:
        """POST a file as the multipart field `file` (streamed from disk)."""
        with file.open("rb") as handle:
            key = {"Idempotency-Key": str(uuid.uuid4())}
            return self._send("POST", path, files={"file": (file.name, handle)}, headers=key)

    def patch(self, path: str, body: Any) -> Any:
        return self._send("PATCH", path, json=body)

    def put(self, path: str, body: Any) -> Any:
        return self._send("PUT", path, json=body)

    def delete(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        return self._send("DELETE", path, params=query)

    def _send(self, method: str, path: str, **options: Any) -> Any:
        repeatable = method != "POST" or bool(IDEMPOTENT_POSTS.match(path))
        delay = self.backoff
        for attempt in range(1, RETRIES + 1):
            last = attempt == RETRIES
            try:
                response = self.http.request(method, path, **options)
            except httpx.TransportError as exc:
                unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if last or not (unsent or repeatable):
                    raise ApiError(_unreachable(self.http.base_url, method, path, exc)) from exc
            else:
                if response.status_code < 500 or last or not repeatable:
                    break
            time.sleep(delay)
            delay *= 2
        if response.is_error:
            raise ApiError(
                f"{method} {path}: {response.status_code} {reason(response)}",
                response.status_code,
            )
        return response.json() if response.content else None


def _unreachable(base_url: httpx.URL, method: str, path: str, exc: Exception) -> str:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return f"cannot reach the API at {base_url} ({exc}); is it running? (set DRIP_API_URL)"
    return (
        f"{method} {path}: the connection failed mid-request ({exc!r}); it may have been done: "
        "check before trying again"
    )


def reason(response: httpx.Response) -> str:
    """The API's message, from an RFC 9457 problem (`detail`, `errors`) or a `{"detail": ...}`."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    if not isinstance(body, dict):
        return response.text
    errors = body.get("errors")
    detail = body.get("detail", body.get("title", response.text))
    if not isinstance(errors, list) and isinstance(detail, list):
        errors, detail = detail, None  # FastAPI's shape: the validation errors in `detail`
    if isinstance(errors, list) and errors:  # field location and message each
        return "; ".join(
            f"{'.'.join(str(part) for part in error.get('loc', []))}: {error.get('msg')}"
            for error in errors
            if isinstance(error, dict)
        )
    return str(detail)
