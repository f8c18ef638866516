"""Webhook subscriptions (journey events out): create one with a generated signing secret, list,
read, delete, and read its deliveries.

The secret signs every delivery, so it must be readable by the worker, and is never stored in
clear: it is encrypted (Fernet) under a key derived from DRIP_SECRET_KEY, and read back with
that key or any of DRIP_OLD_SECRET_KEYS, so a rotation keeps the subscriptions made before it
working (docs/security.md).

A target must not be this machine or its private network (a server-side request forgery lets
anyone with an API key probe it): its host is resolved and every address must be public, unless
DRIP_WEBHOOK_ALLOW_PRIVATE=true. The worker checks again before every attempt (DNS changes)."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import delete
from sqlmodel import Session, col, select

from domain.webhooks_out import JourneyEventType
from services.errors import Invalid, NotFound
from storage.models import WebhookDelivery, WebhookSubscription

SECRET_PREFIX = "whsec_"
URL_LOC = ["body", "url"]


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
