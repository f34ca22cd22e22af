"""API-key authentication: ``Authorization: Bearer KEY`` checked against the store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import Request

from flywheel.errors import Forbidden, Unauthorized
from flywheel.store import ApiKey

__all__ = ["ANONYMOUS", "require"]

#: Stands in for a key when the server runs with auth disabled (loopback only).
ANONYMOUS = ApiKey(
    id="anonymous",
    name="anonymous",
    prefix="",
    scopes=["admin"],
    created_at=datetime(1970, 1, 1, tzinfo=UTC),
    revoked_at=None,
)


def require(*scopes: str) -> Callable[[Request], ApiKey]:
    """A dependency admitting keys that hold one of ``scopes`` (``admin`` always may)."""
    allowed = set(scopes) | {"admin"}

    def check(request: Request) -> ApiKey:
        state = request.app.state
        if not state.auth:
            return ANONYMOUS
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized(
                "missing API key",
                hint="send 'Authorization: Bearer KEY'; create one with "
                "'flywheel keys create --scope ingest'",
            )
        key = state.store.find_key(secret.strip())
        if key is None:
            raise Unauthorized("unknown or revoked API key")
        if not allowed.intersection(key.scopes):
            raise Forbidden(
                f"key {key.prefix}... has scope(s) {key.scopes}; this needs one of {sorted(allowed)}"
            )
        return key

    return check
