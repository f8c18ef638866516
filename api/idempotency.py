"""Safe retries: an `Idempotency-Key` header makes a retried POST return the first answer.

A route opts in with `dependencies=[Idempotent]`, which documents the header and, before the
route runs, claims the key or answers for it; a middleware (`install(app)`) records the answer:

1. The first request with a key claims it by inserting a row (primary key: caller + key) before
   the route runs; a concurrent duplicate loses that insert. It then waits up to
   `IN_PROGRESS_WAIT_SECONDS` for the first to finish, else answers 409 "in progress".
2. A 2xx answer is stored with the row; a retry with the same key, method, path and body gets it
   back byte for byte (status and JSON body, header `Idempotent-Replayed: true`) and nothing
   runs again. Any other answer (4xx, 5xx, a crash) releases the key: nothing was done, so the
   client may fix the request and retry with the same key.
3. The same key with a different method, path or body is a 422 naming the header.

Keys are scoped by the caller's credentials (a hash of the `Authorization` header), so two
clients cannot read each other's answers. Records live in the database, so every API replica
sees them, for `RETENTION` (24 hours); older ones are pruned lazily by the requests themselves.
A claim left "in progress" by a replica that crashed mid-request is taken over after
`STALE_AFTER`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from datetime import timedelta
from typing import Annotated

import anyio
from fastapi import Depends, FastAPI, Header, Request
from sqlalchemy import and_, delete, or_, update
from sqlalchemy.engine import Engine
from sqlmodel import col
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import problem, validation_problem
from storage.db import session_scope
from storage.inserts import insert_ignoring_conflicts
from storage.models import IdempotencyRecord, utcnow

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
RETENTION = timedelta(hours=24)
STALE_AFTER = timedelta(minutes=10)  # far longer than any request takes
IN_PROGRESS_WAIT_SECONDS = 10.0
POLL_SECONDS = 0.2
PRUNE_EVERY_SECONDS = 60.0
SCOPE_KEY = "drip.idempotency"


class IdempotentAnswer(Exception):
    """Raised by the dependency to answer without running the route (see `install`)."""

    def __init__(self, response: Response) -> None:
        self.response = response


class _Claim:
    """Shared by the middleware and the dependency of one request: the key this request holds."""

    fingerprint: Fingerprint | None = None


async def idempotency_key(
    request: Request,
    key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            min_length=1,
            max_length=MAX_KEY_LENGTH,
            description="Any unique string (a UUID): a retry with the same key, path and body "
            "returns the first 2xx answer instead of acting again. Kept 24 hours.",
        ),
    ] = None,
) -> None:
    """Claim the key before the route runs, or answer for it (a replay, a mismatch, a 409)."""
    if key is None:
        return
    claim_holder: _Claim = request.scope[SCOPE_KEY]  # put there by the middleware
    fingerprint = Fingerprint(request.scope, key, await request.body())
    engine: Engine = request.app.state.engine
    deadline = time.monotonic() + IN_PROGRESS_WAIT_SECONDS
    while True:
        existing = await run_in_threadpool(claim, engine, fingerprint, _prune_due(request))
        if existing is None:
            claim_holder.fingerprint = fingerprint  # ours: the route runs, the middleware records
            return
        if (existing.method, existing.path, existing.body_hash) != (
            fingerprint.method,
            fingerprint.path,
            fingerprint.body_hash,
        ):
            raise IdempotentAnswer(_mismatch(existing))
        if existing.status_code is not None:
            raise IdempotentAnswer(_replay(existing))
        if time.monotonic() >= deadline:
            raise IdempotentAnswer(_in_progress())
        await asyncio.sleep(POLL_SECONDS)  # the first request is still running


# `dependencies=[Idempotent]` on a POST route: documents the header and makes the route safe.
Idempotent = Depends(idempotency_key)


def install(app: FastAPI) -> None:
    app.add_middleware(IdempotencyMiddleware)
    app.add_exception_handler(IdempotentAnswer, _answer)  # type: ignore[arg-type]


async def _answer(_request: Request, exc: IdempotentAnswer) -> Response:
    return exc.response


def _prune_due(request: Request) -> bool:
    """At most once a minute per process, a claim also deletes expired records."""
    now = time.monotonic()
    state = request.app.state
    if now < getattr(state, "idempotency_next_prune", 0.0):
        return False
    state.idempotency_next_prune = now + PRUNE_EVERY_SECONDS
    return True


class Fingerprint:
    """What a key is bound to: the caller, the method, the path with its query, the body."""

    def __init__(self, scope: Scope, key: str, body: bytes) -> None:
        headers = dict(scope["headers"])
        self.key = key
        self.scope = caller_scope(headers.get(b"authorization", b""))
        self.method = scope["method"]
        query = scope.get("query_string", b"").decode("latin-1")
        self.path = scope["path"] + (f"?{query}" if query else "")
        self.body_hash = hashlib.sha256(_canonical(body)).hexdigest()


def caller_scope(authorization: bytes) -> str:
    """One caller, one scope: the key check accepts `bearer  KEY` as `Bearer KEY`, so both must
    name the same records, or a retry spelled differently would act twice."""
    scheme, _, token = authorization.strip().partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():
        authorization = b"Bearer " + token.strip()
    return hashlib.sha256(authorization).hexdigest()


def _canonical(body: bytes) -> bytes:
    # The same JSON with its keys in another order or other spacing is the same request.
    try:
        return json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):  # not JSON (or absurdly nested): the bytes as sent
        return body


class IdempotencyMiddleware:
    """Records the answer of a request whose dependency claimed a key, or frees the key."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        holder = scope[SCOPE_KEY] = _Claim()
        status = 0
        content_type: str | None = None
        chunks: list[bytes] = []

        stored = False

        async def capture(message: Message) -> None:
            nonlocal status, content_type, stored
            if holder.fingerprint is not None:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    headers = dict(message.get("headers", []))
                    content_type = headers.get(b"content-type", b"").decode("latin-1")
                elif message["type"] == "http.response.body":
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body") and 200 <= status < 300:
                        # Record the answer before the client has it: a retry that follows
                        # the answer at once must find it, not an "in progress" claim.
                        body = b"".join(chunks).decode("utf-8", errors="replace")
                        await run_in_threadpool(
                            complete, scope["app"].state.engine, holder.fingerprint, status,
                            body, content_type,
                        )  # fmt: skip
                        stored = True
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            if holder.fingerprint is not None and not stored:
                # Nothing to replay: free the key for a corrected retry.
                with anyio.CancelScope(shield=True):
                    await run_in_threadpool(release, scope["app"].state.engine, holder.fingerprint)


def _replay(record: IdempotencyRecord) -> Response:
    return Response(
        content=(record.response_body or "").encode("utf-8"),
        status_code=record.status_code or 200,
        media_type=record.content_type or "application/json",
        headers={"Idempotent-Replayed": "true"},
    )


def _mismatch(record: IdempotencyRecord) -> Response:
    return validation_problem(
        [
            {
                "loc": ["header", HEADER],
                "msg": f"this {HEADER} was already used for a different request "
                f"({record.method} {record.path} with another body); use a new key",
                "type": "value_error",
            }
        ]
    )


def _in_progress() -> Response:
    return problem(
        409,
        f"a request with this {HEADER} is still in progress; retry it in a moment to get its "
        "answer",
        code="idempotency_key_in_progress",
        headers={"Retry-After": "1"},
    )


# --- the records ------------------------------------------------------------------------------


def _this(fp: Fingerprint):  # type: ignore[no-untyped-def]
    return and_(col(IdempotencyRecord.scope) == fp.scope, col(IdempotencyRecord.key) == fp.key)


def claim(engine: Engine, fp: Fingerprint, prune: bool = False) -> IdempotencyRecord | None:
    """None when this request now holds the key (and must act); else the record holding it."""
    with session_scope(engine) as session:
        now = utcnow()
        if prune:
            session.execute(
                delete(IdempotencyRecord).where(col(IdempotencyRecord.created_at) < now - RETENTION)
            )
        # An expired record, or a claim abandoned by a crashed replica, no longer holds the key.
        session.execute(
            delete(IdempotencyRecord).where(
                _this(fp),
                or_(
                    col(IdempotencyRecord.created_at) < now - RETENTION,
                    and_(
                        col(IdempotencyRecord.status_code).is_(None),
                        col(IdempotencyRecord.created_at) < now - STALE_AFTER,
                    ),
                ),
            )
        )
        row = dict(
            scope=fp.scope,
            key=fp.key,
            method=fp.method,
            path=fp.path,
            body_hash=fp.body_hash,
            created_at=now,
        )
        if insert_ignoring_conflicts(session, IdempotencyRecord, [row], returning="key"):
            return None
        existing = session.get(IdempotencyRecord, (fp.scope, fp.key))
        if existing is None:
            # Released between our insert and this read: an in-progress look, so we poll again.
            return IdempotencyRecord(**row)
        return existing


def complete(
    engine: Engine, fp: Fingerprint, status: int, body: str, content_type: str | None
) -> None:
    with session_scope(engine) as session:
        session.execute(
            update(IdempotencyRecord)
            .where(_this(fp))
            .values(status_code=status, response_body=body, content_type=content_type)
        )


def release(engine: Engine, fp: Fingerprint) -> None:
    with session_scope(engine) as session:
        session.execute(
            delete(IdempotencyRecord).where(_this(fp), col(IdempotencyRecord.status_code).is_(None))
        )
