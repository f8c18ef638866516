"""Single-use values of provider signatures. Mailgun signs only a timestamp and a token, not the
event: whoever sees one request could attach its signature to any other event. Each token is
kept with a hash of the event it first came with: the same pair again is the provider's retry,
the token with anything else is a replay. Kept in the database, so every API replica and a
restarted one know it, and apart from the events, which an erasure deletes."""

from __future__ import annotations

import hashlib
import json
import random
from datetime import timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import col

from storage.db import session_scope
from storage.inserts import insert_ignoring_conflicts
from storage.models import WebhookNonce, utcnow

# Longer than the signatures' freshness window (24 h) plus Mailgun's 8 h of retries.
KEEP = timedelta(hours=48)
PRUNE_EVERY = 100  # requests, on average


def payload_hash(raw: Any) -> str:
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def claim(engine: Engine, provider: str, nonces: dict[str, Any]) -> bool:
    """Record each {nonce: payload}; False if a nonce was seen before with another payload."""
    if not nonces:
        return True
    rows = [
        dict(
            provider=provider,
            nonce=hashlib.sha256(nonce.encode()).hexdigest(),  # bounded, whatever its length
            payload_sha256=payload_hash(raw),
            seen_at=utcnow(),
        )
        for nonce, raw in nonces.items()
    ]
    with session_scope(engine) as session:
        if random.randrange(PRUNE_EVERY) == 0:
            session.execute(delete(WebhookNonce).where(col(WebhookNonce.seen_at) < utcnow() - KEEP))
        insert_ignoring_conflicts(session, WebhookNonce, rows, returning="nonce")
        for row in rows:
            kept = session.get(WebhookNonce, (provider, row["nonce"]))
            if kept is None or kept.payload_sha256 != row["payload_sha256"]:
                return False
    return True
