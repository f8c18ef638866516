"""Suppression look-ups that also see erased people.

An erased address (`DELETE /api/recipients/{email}`) keeps its suppression only as
`hmac-sha256:<hex of HMAC(key, lower-cased address)>`: enough to recognise the address if it is
enrolled again, without the database holding it. Keyed, so a copy of the database alone cannot
confirm a guessed address (a bare SHA-256 of an address is a dictionary look-up away). The key
is `DRIP_SUPPRESSION_HASH_KEY`, or else `DRIP_SECRET_KEY`, whose rotated-out values
(`DRIP_OLD_SECRET_KEYS`) keep matching the hashes made with them.

Entries erased before the key (`sha256:<hex>`) still match; erasing the address again rewrites
its entry in the keyed form. Every "may we mail this address?" check goes through here so it
matches the plain and both hashed forms."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from storage.models import Suppression

HASH_PREFIX = "hmac-sha256:"
LEGACY_PREFIX = "sha256:"  # unkeyed, written before the key; matched, never written

_keys: list[bytes] = []  # the first hashes; the others (rotated out) still match


def use_hash_keys(keys: list[str]) -> None:
    """Set the process's keys (the API and the worker do, from their settings)."""
    global _keys
    _keys = [key.encode("utf-8") for key in keys if key]


def _hash_keys() -> list[bytes]:
    if not _keys:  # a process that did not set them: its own environment's settings
        from settings import get_settings

        use_hash_keys(get_settings().suppression_keys)
    return _keys


def _keyed(key: bytes, email: str) -> str:
    address = email.strip().lower().encode("utf-8")
    return HASH_PREFIX + hmac.new(key, address, hashlib.sha256).hexdigest()


def hashed(email: str) -> str:
    """The stored form of an erased address's suppression."""
    return _keyed(_hash_keys()[0], email)


def legacy_hashed(email: str) -> str:
    return LEGACY_PREFIX + hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


def is_hashed(value: str) -> bool:
    return value.startswith((HASH_PREFIX, LEGACY_PREFIX))


def stored_forms(email: str) -> list[str]:
    """Every key a suppression of `email` may be stored under: plain, keyed hash (with the
    current key or a rotated-out one), legacy hash."""
    email = email.strip().lower()
    return [email, *(_keyed(key, email) for key in _hash_keys()), legacy_hashed(email)]


# Every send asks: one statement for all the forms, built once.
_FIND = select(Suppression).where(col(Suppression.email).in_(bindparam("forms", expanding=True)))


def find_suppression(session: Session, email: str) -> Suppression | None:
    """The suppression of `email`, stored plain (lower-cased) or, after erasure, hashed."""
    forms = stored_forms(email)  # first form first
    found = {row.email: row for row in session.exec(_FIND, params={"forms": forms})}
    return next((found[form] for form in forms if form in found), None)


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
