"""What every request passes before a route sees it, in every mode (``--no-auth``
included): the host it names, the site it comes from, the type and size of its body.

- **Host**: a name the server answers to (localhost, ``FLYWHEEL_HOST``,
  ``FLYWHEEL_ALLOWED_HOSTS``) or an IP address. DNS rebinding makes a browser
  send another site's name to this server; an address cannot be rebound, so
  addresses pass (probes and scrapers that dial an IP keep working). 403 else;
  ``/healthz`` is exempt.
- **Origin**: a state-changing request (POST, PUT, PATCH, DELETE) from a
  browser names its page's origin; it must be this server's. ``Origin: null``
  (a sandboxed frame, a ``file:`` page, a redirect from another site) and
  ``Sec-Fetch-Site: cross-site|same-site`` are refused (403). Non-browser
  clients send no Origin and pass.
- **Content type**: the JSON API takes ``application/json``, OTLP routes
  also ``application/x-protobuf``, the pages' forms
  ``application/x-www-form-urlencoded`` (415 else). A body without a type is
  read as the route's own: only non-browser clients send one, since a browser
  always sends an Origin on a POST.
- **NUL**: a path or query parameter with a NUL character is refused (400):
  no name, id or filter holds one, and PostgreSQL cannot compare one.
- **Size**: a body is cut off at ``FLYWHEEL_MAX_BODY_BYTES`` (the unauthenticated
  login form at 16 KiB) while it is read, before anything parses it (413).

Every HTML answer gets a Content-Security-Policy (the pages' own when they set
none), and every answer ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flywheel.config import Settings
from flywheel.errors import FlywheelError, Forbidden, InvalidInput, PayloadTooLarge, UnsupportedMediaType

__all__ = ["LOGIN_BODY_BYTES", "RequestGuard", "error_response", "host_allowed", "same_origin"]

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOGIN_BODY_BYTES = 16 * 1024
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
PROTOBUF = "application/x-protobuf"
OTLP_PATHS = frozenset({"/v1/traces", "/v1/logs"})
UNPARAMETERISED = frozenset({"/healthz", "/metrics"})  # they read no path or query parameter
DEFAULT_PORTS = {"http": "80", "https": "443"}


def error_response(request: Request, exc: FlywheelError) -> Response:
    """An error as the client expects it: a page under ``/ui/``, JSON elsewhere."""
    if request.url.path.startswith("/ui/"):
        from flywheel.web import pages

        return pages.html_error(request, exc)
    body: dict[str, Any] = {"type": type(exc).__name__, "message": exc.message}
    if exc.hint:
        body["hint"] = exc.hint
    return JSONResponse({"error": body}, status_code=exc.status)


def _split_host(value: str) -> tuple[str, str]:
    """``name[:port]`` or ``[v6][:port]`` -> (lower-case name without a trailing dot, port)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        return name, rest.removeprefix(":")
    name, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    return name.rstrip("."), port


def host_allowed(host: str, allowed: frozenset[str]) -> bool:
    """Whether the Host header ``host`` names this server (see the module docstring)."""
    name, _ = _split_host(host)
    if not name:
        return False
    if "*" in allowed or name in allowed:
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    return any(a.startswith(".") and (name.endswith(a) or name == a[1:]) for a in allowed)


def same_origin(origin: str, host: str) -> bool:
    """Whether a browser's ``Origin`` is the server the request's ``Host`` names."""
    if origin == "null":
        return False
    parts = urlsplit(origin)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return False
    origin_name = parts.hostname.rstrip(".").lower()
    origin_port = str(parts.port) if parts.port is not None else DEFAULT_PORTS[parts.scheme]
    name, port = _split_host(host)
    return origin_name == name and origin_port in ({port} if port else set(DEFAULT_PORTS.values()))


def _allowed_hosts(settings: Settings) -> frozenset[str]:
    names = {"localhost", *(h.strip().lower().rstrip(".") for h in settings.allowed_hosts)}
    if settings.host and settings.host not in ("0.0.0.0", "::"):
        names.add(_split_host(settings.host)[0])
    return frozenset(names)


class RequestGuard:
    """ASGI middleware applying the checks of the module docstring."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.hosts = _allowed_hosts(settings)
        self.max_body = settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path = request.url.path
        limit = LOGIN_BODY_BYTES if path == "/ui/login" else self.max_body
        try:
            self.check(request, limit)
        except FlywheelError as exc:
            await error_response(request, exc)(scope, receive, _secured(send))
            return
        await self.app(scope, _limited(receive, limit), _secured(send))

    def check(self, request: Request, limit: int) -> None:
        headers, path = request.headers, request.url.path
        host = headers.get("host", "")
        if path != "/healthz" and not host_allowed(host, self.hosts):
            raise Forbidden(
                f"this server does not answer to the host name {host!r}",
                hint="name it by localhost or an IP address, or add the name to FLYWHEEL_ALLOWED_HOSTS",
            )
        # No name, id or filter holds a NUL, and PostgreSQL cannot even compare
        # one: refuse it here rather than let it reach a query (the probes read none).
        if path not in UNPARAMETERISED and (
            "\x00" in path or any("\x00" in k or "\x00" in v for k, v in request.query_params.multi_items())
        ):
            raise InvalidInput(
                "the URL has a NUL character (%00) in its path or a query parameter",
                hint="remove it: no name, id or filter contains one",
            )
        if request.method not in STATE_CHANGING:
            return
        origin = headers.get("origin")
        if origin is not None and not same_origin(origin, host):
            raise Forbidden(
                f"a request from {origin} is refused: another site may not change this server's data"
                if origin != "null"
                else "a request from an opaque origin (Origin: null: a sandboxed frame, a file or "
                "a redirect from another site) is refused",
                hint="post from this server's own pages, or from a client that is not a browser",
            )
        if headers.get("sec-fetch-site", "").lower() in ("cross-site", "same-site"):
            raise Forbidden(
                "a request another site's page sent is refused",
                hint="post from this server's own pages, or from a client that is not a browser",
            )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
        media = headers.get("content-type", "").partition(";")[0].strip().lower()
        accepted: tuple[str, ...]
        if path.startswith("/ui/"):
            accepted = (FORM,)
        elif path in OTLP_PATHS:
            accepted = (PROTOBUF, JSON)
        else:
            accepted = (JSON,)
        if media and media not in accepted:
            raise UnsupportedMediaType(
                f"a body of type {media!r} is not taken here; send {' or '.join(accepted)}"
            )


def _limited(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises PayloadTooLarge once the body passes ``limit`` bytes
    (a chunked body declares no length); the route's error handler answers 413."""
    size = 0

    async def receive_limited() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
        return message

    return receive_limited


def _secured(send: Send) -> Send:
    async def send_secured(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            headers.setdefault("X-Content-Type-Options", "nosniff")
            if headers.get("content-type", "").startswith("text/html"):
                from flywheel.web.pages import CSP

                headers.setdefault("Content-Security-Policy", CSP)
                headers.setdefault("Referrer-Policy", "same-origin")
        await send(message)

    return send_secured
