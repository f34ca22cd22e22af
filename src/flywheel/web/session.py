"""Reviewer sessions and CSRF tokens for the web pages.

Logging in exchanges an API key of scope ``review`` or ``admin`` for a
session cookie: ``KEY_ID.EXPIRY.SESSION_ID.SIGNATURE``, signed with HMAC-SHA256
by the server's secret (``FLYWHEEL_SESSION_SECRET``, else one generated once and
kept in ``FLYWHEEL_HOME/session_secret``, so several workers share it). The
key is looked up on every request, so revoking it ends its sessions; logging
out records the session id as ended in the store (``revoked_sessions``, kept
until the cookie would have expired), so a copy of the cookie stops working
too. Every form carries a CSRF token bound to the session; scripts may instead
send ``Authorization: Bearer KEY``, which needs no token (no ambient credential).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fastapi import Request

from flywheel.config import Settings
from flywheel.errors import Forbidden, Unauthorized
from flywheel.store import ApiKey

__all__ = ["COOKIE", "Session", "SessionSigner", "UI_SCOPES", "current_user"]

COOKIE = "flywheel_session"
UI_SCOPES = {"review", "admin"}
SESSION_SECONDS = 12 * 3600


@dataclass(frozen=True)
class Session:
    key_id: str
    id: str
    expires_at: datetime


def _secret(settings: Settings) -> bytes:
    configured = getattr(settings, "session_secret", None)
    if configured:
        return configured.get_secret_value().encode()
    path = Path(settings.home) / "session_secret"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_hex(32).encode()
        try:  # first writer wins; a concurrent worker reads what it wrote
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(value)
        return value


class SessionSigner:
    def __init__(self, settings: Settings) -> None:
        self.secret = _secret(settings)

    def _mac(self, message: str) -> str:
        return hmac.new(self.secret, message.encode(), hashlib.sha256).hexdigest()

    def issue(self, key_id: str, *, seconds: int = SESSION_SECONDS) -> str:
        body = f"{key_id}.{int(time.time()) + seconds}.{secrets.token_hex(16)}"
        return f"{body}.{self._mac(body)}"

    def read(self, cookie: str) -> Session | None:
        """The session of a well-signed, unexpired cookie, else None (whether it was
        ended by a logout is the store's to say)."""
        parts = cookie.split(".")
        if len(parts) != 4:
            return None
        key_id, expiry, session_id, mac = parts
        if not (key_id and expiry.isdigit() and session_id and mac):
            return None
        if not hmac.compare_digest(mac, self._mac(f"{key_id}.{expiry}.{session_id}")):
            return None
        if int(expiry) <= time.time():
            return None
        return Session(key_id, session_id, datetime.fromtimestamp(int(expiry), UTC))

    def csrf(self, cookie: str) -> str:
        return self._mac(f"csrf:{cookie}")

    def check_csrf(self, cookie: str, token: str) -> bool:
        return bool(token) and hmac.compare_digest(token, self.csrf(cookie))


def current_user(request: Request) -> tuple[ApiKey, str | None]:
    """The reviewer (a key of scope review or admin) and the session cookie, if the
    request came with one rather than a bearer header. Raises Unauthorized/Forbidden."""
    from flywheel.server.auth import ANONYMOUS

    state = request.app.state
    if not state.auth:
        return ANONYMOUS, request.cookies.get(COOKIE)
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    key: ApiKey | None
    cookie = None
    if scheme.lower() == "bearer" and secret.strip():
        key = state.store.find_key(secret.strip())
    else:
        cookie = request.cookies.get(COOKIE)
        session = state.signer.read(cookie) if cookie else None
        key = state.store.session_key(session.key_id, session.id) if session else None
    if key is None:
        raise Unauthorized("log in with a key of scope review or admin", hint="open /ui/login")
    if not UI_SCOPES.intersection(key.scopes):
        raise Forbidden(f"key {key.prefix}... has scope(s) {key.scopes}; the pages need review or admin")
    return key, cookie
