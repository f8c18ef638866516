"""The CLI's HTTP client: retries with backoff, the same `Idempotency-Key` on every retry of a
POST (so the real API acts once), no retry of a POST that could act twice, and both error
shapes (RFC 9457 problems and `{"detail": ...}`). Between the CLI and the real API runs a real
HTTP proxy that can lose an answer: it forwards the request, then answers 502 instead."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tests.cli.conftest import drip

Rule = Callable[[str, str], tuple[int, bytes] | None]  # (method, path) -> answer instead


@dataclass
class Seen:
    method: str
    path: str
    key: str | None
    status: int  # what the API answered (0: not forwarded)
    replayed: bool


@dataclass
class Proxy:
    url: str
    seen: list[Seen] = field(default_factory=list)


@contextmanager
def proxy(
    api: httpx.AsyncClient, lose: frozenset[str] = frozenset(), answer: Rule | None = None
) -> Iterator[Proxy]:
    """Forwards to the API. The first answer to a POST of a path in `lose` is lost (502 after
    the API acted); `answer` may answer a request itself, without forwarding it."""
    target = str(api.base_url)
    lost: set[str] = set()
    forward = httpx.Client(base_url=target, timeout=60)

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = self.path.split("?")[0]
            own = answer(self.command, path) if answer else None
            if own is not None:
                status, content = own
                record.seen.append(
                    Seen(self.command, path, self.headers.get("Idempotency-Key"), 0, False)
                )
                return self._reply(status, content, "application/problem+json")
            headers = {
                k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
            }
            response = forward.request(self.command, self.path, content=body, headers=headers)
            record.seen.append(
                Seen(
                    self.command,
                    path,
                    self.headers.get("Idempotency-Key"),
                    response.status_code,
                    response.headers.get("Idempotent-Replayed") == "true",
                )
            )
            if self.command == "POST" and path in lose and path not in lost:
                lost.add(path)
                return self._reply(502, b"bad gateway", "text/plain")
            self._reply(
                response.status_code, response.content, response.headers.get("content-type", "")
            )

        def _reply(self, status: int, content: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_PATCH = do_DELETE = _any

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    record = Proxy(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()
        forward.close()


CAMPAIGN = "name: Retried\ntemplates: {a: {html: hi}}\nsteps:\n  - {subject: S, delay_hours: 0, template: a}\n"


async def test_a_lost_answer_is_retried_with_the_same_key_and_acts_once(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN)
    with proxy(api, lose=frozenset({"/api/templates", "/api/campaigns"})) as p:
        result = await drip(p.url, "apply", str(path))
    assert result.exit_code == 0, result.output
    for route in ("/api/templates", "/api/campaigns"):
        first, retry = (s for s in p.seen if (s.method, s.path) == ("POST", route))
        assert first.key and retry.key == first.key, "one key for a call and its retries"
        assert (first.status, first.replayed, retry.status, retry.replayed) == (
            201,
            False,
            201,
            True,
        )
    assert len((await api.get("/api/templates")).json()) == 1
    assert len((await api.get("/api/campaigns")).json()) == 1
    assert all(s.key for s in p.seen if s.method == "POST"), "every POST sends a key"


async def test_a_post_the_api_does_not_replay_is_not_repeated(api: httpx.AsyncClient) -> None:
    cid = (await api.post("/api/campaigns", json={"name": "Once", "steps": []})).json()["id"]
    clone = f"/api/campaigns/{cid}/clone"
    with proxy(api, lose=frozenset({clone})) as p:
        result = await drip(p.url, "campaign", "clone", str(cid))
    assert result.exit_code == 1
    assert f"POST {clone}: 502" in result.stderr
    assert [s.path for s in p.seen if s.method == "POST"] == [clone], "not repeated"
    assert len((await api.get("/api/campaigns")).json()) == 2, "the one clone the API made"


async def test_5xx_is_retried_then_reported_in_either_error_shape(api: httpx.AsyncClient) -> None:
    calls = {"n": 0}

    def flaky(method: str, path: str) -> tuple[int, bytes] | None:
        if path != "/api/campaigns":
            return None
        calls["n"] += 1
        if calls["n"] <= 2:
            return (
                503,
                b'{"type": "about:blank", "title": "Service Unavailable", "status": 503, "detail": "database unavailable", "code": "unavailable"}',
            )
        return None

    with proxy(api, answer=flaky) as p:
        listed = await drip(p.url, "campaign", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert [s.status for s in p.seen] == [0, 0, 200], "two 503s, then the API's answer"

    problem = (
        b'{"type": "https://drip.example/problems/validation", "title": "Unprocessable", '
        b'"status": 422, "detail": "1 field is invalid", "code": "validation_error", '
        b'"errors": [{"loc": ["body", "email"], "msg": "invalid email", "type": "value_error"}]}'
    )
    with proxy(api, answer=lambda m, path: (422, problem) if m == "POST" else None) as p:
        refused = await drip(p.url, "suppressions", "add", "nobody")
    assert "error: POST /api/suppressions: 422 body.email: invalid email" in refused.stderr
    assert len(p.seen) == 1, "a 4xx is not retried"
    before = (
        b'{"detail": [{"loc": ["body", "email"], "msg": "invalid email", "type": "value_error"}]}'
    )
    with proxy(api, answer=lambda m, path: (422, before) if m == "POST" else None) as p:
        refused = await drip(p.url, "suppressions", "add", "nobody")
    assert "error: POST /api/suppressions: 422 body.email: invalid email" in refused.stderr
    unavailable = b'{"title": "Service Unavailable", "status": 503, "detail": "down for now", "code": "unavailable"}'
    with proxy(api, answer=lambda m, path: (503, unavailable)) as p:
        down = await drip(p.url, "template", "list")
    assert "error: GET /api/templates: 503 down for now" in down.stderr
    assert len(p.seen) == 4, "every attempt made"
