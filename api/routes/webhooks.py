"""Provider webhooks: `POST /api/webhooks/{provider}` for SendGrid, Postmark, Mailgun, SES
(via SNS) and Resend.

Verify on the raw bytes (webhooks/), store every event of the request in one transaction, answer
2xx only once that has committed, then signal the journeys. A signal that fails after the answer
is not lost: the row stays unsignalled and the outbox (services/outbox.py) re-drives it. A retried
request stores nothing new: rows are unique per (provider, dedupe_key).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, Request
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from api.deps import EventsDep
from api.schemas import WebhookReceived
from observability.metrics import WEBHOOK_VERIFICATION_FAILURES
from storage import webhook_nonces
from webhooks import WebhookAuthError, WebhookError, WebhookProvider

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])

# SendGrid flushes a batch at 768 KB; the others post one event. 5 MiB leaves ample room.
MAX_BODY_BYTES = 5 * 1024 * 1024


def get_providers(request: Request) -> Mapping[str, WebhookProvider]:
    providers: Mapping[str, WebhookProvider] = request.app.state.webhook_providers
    return providers


ProvidersDep = Annotated[Mapping[str, WebhookProvider], Depends(get_providers)]


@router.post(
    "/{provider}",
    operation_id="receiveWebhook",
    summary="Receive a provider's event webhook",
    response_model=WebhookReceived,
    responses={
        401: {"description": "bad, missing or stale signature or credentials"},
        404: {"description": "unknown provider, or its webhook secret is not configured"},
        413: {"description": "body larger than the limit"},
        503: {"description": "could not verify or store now; the provider retries"},
    },
)
async def receive(
    provider: str,
    request: Request,
    providers: ProvidersDep,
    events: EventsDep,
    background: BackgroundTasks,
) -> WebhookReceived:
    """Receive one provider webhook request. A 2xx means its events are stored."""
    handler = providers.get(provider)
    if handler is None:
        raise HTTPException(404, f"unknown webhook provider {provider!r}")
    body = await _read_body(request)
    try:
        received = await handler.handle(request.headers, body)
    except WebhookError as exc:
        if isinstance(exc, WebhookAuthError):  # the signature or credentials did not verify
            WEBHOOK_VERIFICATION_FAILURES.labels(provider).inc()
        raise HTTPException(exc.status_code, str(exc)) from exc
    except Exception as exc:  # e.g. the SNS certificate could not be fetched: worth a retry
        log.exception("%s webhook could not be verified", provider)
        raise HTTPException(503, "could not verify the request now; retry later") from exc
    try:
        nonces = {e.nonce: e.raw for e in received if e.nonce}
        if not await run_in_threadpool(webhook_nonces.claim, events.engine, provider, nonces):
            WEBHOOK_VERIFICATION_FAILURES.labels(provider).inc()  # a replayed signature
            raise HTTPException(401, "signature already used for another event")
        stored = await run_in_threadpool(events.store, received)
    except SQLAlchemyError as exc:
        log.exception("%s webhook: storing %d events failed", provider, len(received))
        raise HTTPException(503, "could not store the events; retry later") from exc
    new = [s.id for s in stored if not s.duplicate]
    if new:
        # Runs after the answer is sent: acknowledge fast, signal right after.
        background.add_task(events.signal_quietly, new)
    return WebhookReceived(received=len(stored), stored=len(new), duplicates=len(stored) - len(new))


async def _read_body(request: Request) -> bytes:
    """The raw body, refused with 413 as soon as it is known to exceed the limit."""
    too_large = HTTPException(413, f"body exceeds {MAX_BODY_BYTES} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():  # also bounds chunked bodies with no Content-Length
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
