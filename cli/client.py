"""The command line's HTTP client for the drip API: base URL and bearer key from its own
settings (cli/settings.py), an `Idempotency-Key` on every POST so a retry after a dropped
connection never acts twice."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from cli.settings import ClientSettings

RETRIES = 3


class ApiError(Exception):
    """A refusal or failure of the API, with its message for a human."""


class ApiClient:
    def __init__(self, settings: ClientSettings, timeout: float = 120.0) -> None:
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self.http = httpx.Client(base_url=settings.api_url, headers=headers, timeout=timeout)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.http.close()

    def get(self, path: str, **params: Any) -> Any:
        return self._send("GET", path, params=params)

    def post(self, path: str, body: Any) -> Any:
        # One key for this call and all its retries: the API answers a retry with the first answer.
        return self._send("POST", path, json=body, headers={"Idempotency-Key": str(uuid.uuid4())})

    def patch(self, path: str, body: Any) -> Any:
        return self._send("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self._send("DELETE", path)

    def _send(self, method: str, path: str, **options: Any) -> Any:
        for attempt in range(1, RETRIES + 1):
            try:
                response = self.http.request(method, path, **options)
                break
            except httpx.TransportError as exc:
                if attempt == RETRIES:
                    raise ApiError(
                        f"cannot reach the API at {self.http.base_url} ({exc}); is it running? "
                        "(set DRIP_API_URL)"
                    ) from exc
        if response.is_error:
            raise ApiError(f"{method} {path}: {response.status_code} {_reason(response)}")
        return response.json() if response.content else None


def _reason(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        return response.text
    if isinstance(detail, list):  # validation errors: field location and message each
        return "; ".join(
            f"{'.'.join(str(part) for part in error.get('loc', []))}: {error.get('msg')}"
            for error in detail
        )
    return str(detail)
