"""Who is looking at the dashboard: a signed session cookie (itsdangerous, keyed by the
settings' secret) and the CSRF token every state-changing form carries.

Every visitor gets a session, first an anonymous one. With DRIP_API_KEYS set, signing in with one
of the keys gives a new session (a new id: a session fixed before login is worth nothing) that
holds a fingerprint of that key, so removing the key from DRIP_API_KEYS ends its sessions too.
The CSRF token is an HMAC of the session id: a page of another site can neither read it nor make
one (and the cookie is SameSite=Strict besides). Keyless, the dashboard is for this machine only,
like the API: api/security.py applies the same loopback and Host checks to it."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.responses import Response

from settings import Settings

COOKIE = "drip_session"
MAX_AGE_SECONDS = 12 * 3600
CSRF_FIELD = "csrf_token"


class LoginRequired(Exception):
    """A page asked for without a signed-in session (with keys set): answered with a 303."""


class CsrfRefused(Exception):
    """A state-changing request without this session's CSRF token: answered with a 403."""


@dataclass(frozen=True)
class Viewer:
    session_id: str
    key_fingerprint: str | None  # the key signed in with; None: anonymous
    new: bool = False  # not yet in the browser's cookie: set it on the answer

    @property
    def signed_in(self) -> bool:
        return self.key_fingerprint is not None


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key, salt="drip-dashboard-session")


def fingerprint(settings: Settings, key: str) -> str:
    return hmac.new(
        settings.secret_key.encode(), b"key:" + key.encode(), hashlib.sha256
    ).hexdigest()


def key_allowed(settings: Settings, key: str) -> bool:
    matched = False
    for allowed in settings.api_keys:  # every key compared: constant time per key
        matched |= hmac.compare_digest(key.encode(), allowed.encode())
    return matched


def new_viewer(settings: Settings, key: str | None = None) -> Viewer:
    return Viewer(
        secrets.token_urlsafe(18), fingerprint(settings, key) if key is not None else None, True
    )


def viewer_of(request: Request) -> Viewer:
    """This request's session, or a new anonymous one when it has none that is valid now."""
    settings: Settings = request.app.state.settings
    raw = request.cookies.get(COOKIE)
    if raw:
        try:
            data = _serializer(settings).loads(raw, max_age=MAX_AGE_SECONDS)
        except BadSignature:
            data = None
        if isinstance(data, dict) and isinstance(data.get("sid"), str):
            key = data.get("key")
            current = {fingerprint(settings, k) for k in settings.api_keys}
            if key is None or key in current:
                return Viewer(data["sid"], key)
    return new_viewer(settings)


def allowed(request: Request, viewer: Viewer) -> bool:
    """May this viewer see the dashboard? Keyless: anyone the security middleware let in."""
    return viewer.signed_in or not request.app.state.settings.api_keys


def csrf_token(settings: Settings, viewer: Viewer) -> str:
    digest = hmac.new(
        settings.secret_key.encode(), b"csrf:" + viewer.session_id.encode(), hashlib.sha256
    )
    return digest.hexdigest()


def check_csrf(settings: Settings, viewer: Viewer, token: object) -> None:
    if viewer.new or not isinstance(token, str):
        raise CsrfRefused()
    if not hmac.compare_digest(token, csrf_token(settings, viewer)):
        raise CsrfRefused()


def keep(request: Request, response: Response, viewer: Viewer) -> Response:
    """Put a new session in the browser: HttpOnly, SameSite=Strict, Secure behind HTTPS."""
    if viewer.new:
        settings: Settings = request.app.state.settings
        value = _serializer(settings).dumps(
            {"sid": viewer.session_id, "key": viewer.key_fingerprint}
        )
        secure = request.url.scheme == "https" or settings.public_url.startswith("https://")
        response.set_cookie(
            COOKIE,
            value,
            max_age=MAX_AGE_SECONDS,
            path="/",
            httponly=True,
            samesite="strict",
            secure=secure,
        )
    return response
