"""Every error data-flywheel raises, each knowing its HTTP status.

    FlywheelError                  500  base class
    ├── ConfigError                500  a setting or config file is wrong
    ├── NotFound                   404  a record does not exist
    ├── InvalidInput               400  a request or argument is malformed
    │   ├── PayloadTooLarge        413  body or batch over the limit
    │   └── UnsupportedMediaType   415  a body of a type the route does not take
    ├── Unauthorized               401  no key, or a key that is unknown or revoked
    ├── Forbidden                  403  the key's scope does not allow this
    ├── Conflict                   409  the record changed under you (a lost race)
    └── StoreUnavailable           503  the database cannot be reached

The server maps them to responses in one handler, the CLI to a message that
says what to do next. The SDK never raises into the agent. This module imports
nothing of ours.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "Conflict",
    "FlywheelError",
    "Forbidden",
    "InvalidInput",
    "NotFound",
    "PayloadTooLarge",
    "StoreUnavailable",
    "Unauthorized",
    "UnsupportedMediaType",
]


class FlywheelError(Exception):
    status: int = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(FlywheelError):
    status = 500


class NotFound(FlywheelError):
    status = 404


class InvalidInput(FlywheelError):
    status = 400


class PayloadTooLarge(InvalidInput):
    status = 413


class UnsupportedMediaType(InvalidInput):
    status = 415


class Unauthorized(FlywheelError):
    status = 401


class Forbidden(FlywheelError):
    status = 403


class Conflict(FlywheelError):
    status = 409


class StoreUnavailable(FlywheelError):
    status = 503
