"""Webhook subscriptions (journey events out): create one with a generated signing secret, list,
read, delete, and read its deliveries.

The secret signs every delivery, so it must be readable by the worker, and is never stored in
clear: it is encrypted (Fernet) under a key derived from DRIP_SECRET_KEY, and read back with
that key or any of DRIP_OLD_SECRET_KEYS, so a rotation keeps the subscriptions made before it
working (docs/security.md).

A target must not be this machine or its private network (a server-side request forgery lets
anyone with an API key probe it): its host is resolved and every address must be public, unless
DRIP_WEBHOOK_ALLOW_PRIVATE=true. The worker checks again before every attempt (DNS changes).

Which event types anyone wants is cached per process (`wanting`), because every recorded send,
skip and end asks and the answer is almost always "nobody": a subscription made in another
process is seen within WANTED_TTL_SECONDS, one made or deleted in this process at once, and a
deletion everywhere at once (a cached "someone" is checked against the rows before writing)."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import delete
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col, select

from domain.webhooks_out import JourneyEventType
from services.errors import Invalid, NotFound
from storage.models import WebhookDelivery, WebhookSubscription

SECRET_PREFIX = "whsec_"
URL_LOC = ["body", "url"]
# How stale a cached "nobody wants this" may be: a subscription made through another process
# (the API, while the worker records) reaches the facts recorded this long after it at the
# latest (docs/webhooks.md).
WANTED_TTL_SECONDS = 5.0


class SecretBox:
    """Encrypts subscription secrets with the app's secret key; decrypts with it or an old one."""

    def __init__(self, key: str, old_keys: Sequence[str] = ()) -> None:
        self._box = MultiFernet([Fernet(_fernet_key(k)) for k in (key, *old_keys)])

    def seal(self, secret: str) -> str:
        return self._box.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._box.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:  # sealed under a key no longer configured
            raise ValueError("the subscription's secret was sealed under an unknown key") from exc


def _fernet_key(secret_key: str) -> bytes:
    # Its own derivation: the same secret key signs links (mail/tokens.py) under other salts.
    digest = hashlib.sha256(b"drip webhook subscription secret\0" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest)


def refused_address(host: str, port: int | None) -> str | None:
    """Why a host may not be a target (it resolves to a non-public address), or None."""
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return f"cannot resolve {host}: {exc}"
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if not address.is_global:
            return f"{host} resolves to {address}, a private, loopback or link-local address"
    return None


def check_target(url: str, allow_private: bool) -> None:
    """A URL we may POST to, or Invalid naming `url`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(URL_LOC, "must be an http or https URL with a host")
    if parts.username or parts.password:
        raise Invalid(URL_LOC, "must not carry credentials: the signature authenticates drip")
    try:
        port = parts.port
    except ValueError as exc:
        raise Invalid(URL_LOC, f"bad port: {exc}") from exc
    if allow_private:
        return
    why = refused_address(parts.hostname, port)
    if why is not None:
        raise Invalid(URL_LOC, f"{why} (set DRIP_WEBHOOK_ALLOW_PRIVATE=true to allow)")


@dataclass
class Created:
    subscription: WebhookSubscription
    secret: str  # shown once, in the answer to the create call


def create(
    session: Session,
    box: SecretBox,
    url: str,
    events: Sequence[JourneyEventType],
    description: str | None,
    allow_private: bool,
) -> Created:
    check_target(url, allow_private)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    subscription = WebhookSubscription(
        url=url,
        events=list(dict.fromkeys(str(e) for e in events)),  # unique, in the order given
        description=description,
        secret_encrypted=box.seal(secret),
    )
    session.add(subscription)
    session.commit()
    changed()
    return Created(subscription, secret)


def page(session: Session, after_id: int | None, limit: int) -> list[WebhookSubscription]:
    """Up to `limit + 1` subscriptions after `after_id`, oldest first."""
    query = select(WebhookSubscription).order_by(col(WebhookSubscription.id)).limit(limit + 1)
    if after_id is not None:
        query = query.where(col(WebhookSubscription.id) > after_id)
    return list(session.exec(query))


def one(session: Session, subscription_id: int) -> WebhookSubscription:
    subscription = session.get(WebhookSubscription, subscription_id)
    if subscription is None:
        raise NotFound("webhook subscription", subscription_id)
    return subscription


def remove(session: Session, subscription_id: int) -> None:
    """Delete it and its deliveries; deliveries still retrying find it gone and stop."""
    one(session, subscription_id)
    session.execute(
        delete(WebhookDelivery).where(col(WebhookDelivery.subscription_id) == subscription_id)
    )
    session.execute(
        delete(WebhookSubscription).where(col(WebhookSubscription.id) == subscription_id)
    )
    session.commit()
    changed()


def deliveries(
    session: Session, subscription_id: int, before_id: str | None, limit: int
) -> list[WebhookDelivery]:
    """Up to `limit + 1` of its deliveries before `before_id`, newest first."""
    one(session, subscription_id)
    query = (
        select(WebhookDelivery)
        .where(col(WebhookDelivery.subscription_id) == subscription_id)
        .order_by(col(WebhookDelivery.id).desc())
        .limit(limit + 1)
    )
    if before_id is not None:
        query = query.where(col(WebhookDelivery.id) < before_id)
    return list(session.exec(query))


# --- who wants an event type (cached) --------------------------------------------------------


@dataclass(frozen=True)
class _Wanted:
    types: frozenset[str]  # every event type some subscription wants
    read_at: float  # time.monotonic() just before the read


_wanted: weakref.WeakKeyDictionary[Engine, _Wanted] = weakref.WeakKeyDictionary()
_generation = 0  # bumped by changed(): a read begun before it is not cached
_lock = threading.Lock()  # the worker records from many threads


def changed() -> None:
    """A subscription was created or deleted here: every database's cache goes."""
    global _generation
    with _lock:
        _generation += 1
        _wanted.clear()


def wanting(session: Session, *types: str) -> list[WebhookSubscription]:
    """The subscriptions that want any of `types`, oldest first. No query while the cache says
    nobody does; otherwise the rows, read in the caller's transaction (and cached again)."""
    engine = _engine(session)
    with _lock:
        cached, generation = _wanted.get(engine), _generation
    started = time.monotonic()
    if cached is not None and started - cached.read_at < WANTED_TTL_SECONDS:
        if not cached.types.intersection(types):
            return []
    rows = list(session.exec(select(WebhookSubscription).order_by(col(WebhookSubscription.id))))
    with _lock:
        if _generation == generation:  # no change here since: the rows are current enough
            _wanted[engine] = _Wanted(frozenset(t for s in rows for t in s.events), started)
    # A handful of rows: filtered here, the same on SQLite and PostgreSQL (a JSON list).
    return [s for s in rows if any(t in s.events for t in types)]


def _engine(session: Session) -> Engine:
    bind = session.get_bind()
    return bind.engine if isinstance(bind, Connection) else bind
