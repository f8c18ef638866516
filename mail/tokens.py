"""Signed tokens for tracking and unsubscribe links: HMAC-SHA256 with DRIP_SECRET_KEY.

Rotation: links are signed with the current key only; the old keys (DRIP_OLD_SECRET_KEYS) still
verify the links already in people's mailboxes, so an unsubscribe link keeps working after the key
changes. Drop an old key once its messages no longer matter (the last send with it plus a while).

A token names a delivery (and a link index); what it resolves to is looked up server-side, so a
token can never redirect anywhere that was not in the message we sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from itsdangerous import BadSignature, Signer

_SALTS = {"open": "drip.open", "click": "drip.click", "unsubscribe": "drip.unsubscribe"}


@dataclass(frozen=True)
class LinkRef:
    delivery_id: str
    link_index: int


class Tokens:
    def __init__(self, secret_key: str, old_keys: Sequence[str] = ()) -> None:
        # itsdangerous signs with the last key of the list and verifies with any of them.
        keys = [*old_keys, secret_key]
        self._signers = {
            kind: Signer(keys, salt=salt, digest_method=hashlib.sha256)
            for kind, salt in _SALTS.items()
        }

    def open_token(self, delivery_id: str) -> str:
        return self._sign("open", delivery_id)

    def click_token(self, delivery_id: str, link_index: int) -> str:
        return self._sign("click", f"{delivery_id}.{link_index}")

    def unsubscribe_token(self, delivery_id: str) -> str:
        return self._sign("unsubscribe", delivery_id)

    def read_open(self, token: str) -> str | None:
        return self._unsign("open", token)

    def read_unsubscribe(self, token: str) -> str | None:
        return self._unsign("unsubscribe", token)

    def read_click(self, token: str) -> LinkRef | None:
        value = self._unsign("click", token)
        if value is None or "." not in value:
            return None
        delivery_id, _, index = value.rpartition(".")
        return LinkRef(delivery_id, int(index)) if index.isdigit() else None

    def _sign(self, kind: str, value: str) -> str:
        return self._signers[kind].sign(value).decode()

    def _unsign(self, kind: str, token: str) -> str | None:
        try:
            return self._signers[kind].unsign(token).decode()
        except (BadSignature, UnicodeDecodeError, ValueError):
            return None
