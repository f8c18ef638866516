"""Email addresses in the one form they are stored and compared in."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

__all__ = ["EmailNotValidError", "normalise_email", "stored_form"]


def normalise_email(raw: str) -> str:
    """Lower-cased address, or EmailNotValidError with a readable reason."""
    checked = validate_email(raw.strip(), check_deliverability=False)
    return checked.normalized.lower()


def stored_form(email: str) -> str:
    """The stored form of an address, also for one that would not validate today (lookups of
    rows written by older rules, erasure of whatever was stored)."""
    try:
        return normalise_email(email)
    except EmailNotValidError:
        return email.strip().lower()
