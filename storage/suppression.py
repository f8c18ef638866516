"""Suppression look-ups that also see erased people.

An erased address (`DELETE /api/recipients/{email}`) keeps its suppression only as
`sha256:<hex of the lower-cased address>`: enough to recognise the address if it is enrolled
again, without the database holding it. Every "may we mail this address?" check goes through
here so it matches both the plain and the hashed form."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlmodel import Session, col, select

from storage.models import Suppression

HASH_PREFIX = "sha256:"


def hashed(email: str) -> str:
    """The stored form of an erased address's suppression."""
    digest = hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()
    return HASH_PREFIX + digest


def find_suppression(session: Session, email: str) -> Suppression | None:
    """The suppression of `email`, stored plain (lower-cased) or, after erasure, hashed."""
    email = email.strip().lower()
    return session.get(Suppression, email) or session.get(Suppression, hashed(email))


def is_suppressed(session: Session, email: str) -> bool:
    return find_suppression(session, email) is not None


def suppressed_among(session: Session, emails: Iterable[str]) -> dict[str, Suppression]:
    """Of the given (normalised) addresses, those suppressed, with their entry; one query."""
    forms = {}
    for email in emails:
        forms[email] = email
        forms[hashed(email)] = email
    found: dict[str, Suppression] = {}
    keys = list(forms)
    for start in range(0, len(keys), 1000):  # under the databases' bound-parameter limits
        chunk = keys[start : start + 1000]
        for row in session.exec(select(Suppression).where(col(Suppression.email).in_(chunk))):
            found.setdefault(forms[row.email], row)
    return found
