"""Suppression look-ups that also see erased people.

An erased address (`DELETE /api/recipients/{email}`) keeps its suppression only as
`hmac-sha256:<hex of HMAC(key, lower-cased address)>`: enough to recognise the address if it is
enrolled again, without the database holding it. Keyed, so a copy of the database alone cannot
confirm a guessed address (a bare SHA-256 of an address is a dictionary look-up away). The key
is `DRIP_SUPPRESSION_HASH_KEY`, or `DRIP_SECRET_KEY` when unset (set it before rotating that).

Entries erased before the key (`sha256:<hex>`) still match; erasing the address again rewrites
its entry in the keyed form. Every "may we mail this address?" check goes through here so it
matches the plain and both hashed forms."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from sqlmodel import Session, col, select

from storage.models import Suppression

HASH_PREFIX = "hmac-sha256:"
LEGACY_PREFIX = "sha256:"  # unkeyed, written before the key; matched, never written

_key: bytes | None = None


def use_hash_key(key: str) -> None:
    """Set the process's key (the API and the worker do, from their settings)."""
    global _key
    _key = key.encode("utf-8")


def _hash_key() -> bytes:
    if _key is None:  # a process that did not set it: its own environment's settings
        from settings import get_settings

        use_hash_key(get_settings().suppression_key)
    assert _key is not None
    return _key


def hashed(email: str) -> str:
    """The stored form of an erased address's suppression."""
    address = email.strip().lower().encode("utf-8")
    return HASH_PREFIX + hmac.new(_hash_key(), address, hashlib.sha256).hexdigest()


def legacy_hashed(email: str) -> str:
    return LEGACY_PREFIX + hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


def is_hashed(value: str) -> bool:
    return value.startswith((HASH_PREFIX, LEGACY_PREFIX))


def stored_forms(email: str) -> list[str]:
    """Every key a suppression of `email` may be stored under: plain, keyed hash, legacy hash."""
    email = email.strip().lower()
    return [email, hashed(email), legacy_hashed(email)]


def find_suppression(session: Session, email: str) -> Suppression | None:
    """The suppression of `email`, stored plain (lower-cased) or, after erasure, hashed."""
    for key in stored_forms(email):
        row = session.get(Suppression, key)
        if row is not None:
            return row
    return None


def is_suppressed(session: Session, email: str) -> bool:
    return find_suppression(session, email) is not None


def suppressed_among(session: Session, emails: Iterable[str]) -> dict[str, Suppression]:
    """Of the given (normalised) addresses, those suppressed, with their entry; one query."""
    forms = {form: email for email in emails for form in stored_forms(email)}
    found: dict[str, Suppression] = {}
    keys = list(forms)
    for start in range(0, len(keys), 900):  # under the databases' bound-parameter limits
        chunk = keys[start : start + 900]
        for row in session.exec(select(Suppression).where(col(Suppression.email).in_(chunk))):
            found.setdefault(forms[row.email], row)
    return found
