"""Where the SDK's batches go: a server over HTTP, or the local store in-process."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from flywheel.config import Settings
from flywheel.errors import FlywheelError, PayloadTooLarge
from flywheel.sdk.pipeline import Delivery, SendOutcome

log = logging.getLogger(__name__)

__all__ = ["HttpTransport", "LocalTransport"]

# Keep and retry: a server that is busy or slow, or answers before it is ready.
_TRANSIENT = {408, 425, 429}
# Keep and retry, with an error logged once: the key or the URL is wrong, not the batch,
# and every batch would be refused alike until someone fixes the setting.
_SETTINGS_WRONG = {401, 403, 404, 405}


class HttpTransport:
    """``POST /v1/events`` with the client's key; maps answers to delivery outcomes.

    200: delivered, but for the events its ``rejected`` list names (they are
    dead-lettered). 413: too large, send it in halves. 5xx, 408, 425, 429 and
    connection errors: keep it and retry (honouring ``Retry-After``). 401, 403,
    404, 405: keep it and retry, the settings are wrong. Any other 4xx: refused
    for good (dead-lettered: the events a 422 names with their own error, the
    rest with the answer's message).
    """

    def __init__(self, settings: Settings) -> None:
        assert settings.url is not None
        headers = {"Content-Type": "application/json", "User-Agent": "flywheel-sdk"}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        self.base_url = settings.url.rstrip("/")
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=settings.sdk_timeout)
        self._warned: set[int] = set()

    def __call__(self, body: bytes) -> Delivery:
        response = self.client.post("/v1/events", content=body)
        status = response.status_code
        if 200 <= status < 300:
            return Delivery(SendOutcome.DELIVERED, _event_errors(response), status)
        if status == 413:
            return Delivery(SendOutcome.SPLIT, status=status, message=_answer(response))
        if status in _TRANSIENT or status >= 500:
            return Delivery(
                SendOutcome.RETRY,
                status=status,
                message=_answer(response),
                retry_after=_retry_after(response),
            )
        if status in _SETTINGS_WRONG or status < 400:
            if status not in self._warned:
                self._warned.add(status)
                log.error(
                    "flywheel: %s answered %d; events are kept in the spool until "
                    "FLYWHEEL_URL / FLYWHEEL_API_KEY are fixed: %s",
                    self.base_url,
                    status,
                    response.text[:200],
                )
            return Delivery(SendOutcome.RETRY, status=status, message=_answer(response))
        # 400 / 422 and the like: the events themselves are bad; sending them again cannot help.
        return Delivery(SendOutcome.REFUSED, _event_errors(response), status, _answer(response))

    def healthy(self) -> bool:
        try:
            return self.client.get("/healthz", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str, params: dict[str, Any], timeout: float) -> Any:
        response = self.client.get(path, params=params, timeout=timeout)
        response.raise_for_status()
        return response.json()

    def artefact(self, ref: str) -> bytes:
        response = self.client.get(f"/v1/artefacts/{ref}", timeout=60.0)
        response.raise_for_status()
        return response.content

    def close(self) -> None:
        self.client.close()


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _event_errors(response: httpx.Response) -> list[dict[str, Any]]:
    """The per-event errors of an ingest answer (``rejected``: index, id, field, message)."""
    data = _json(response)
    rejected = data.get("rejected") if isinstance(data, dict) else None
    if not isinstance(rejected, list):
        return []
    return [e for e in rejected if isinstance(e, dict) and isinstance(e.get("index"), int)]


def _answer(response: httpx.Response) -> str:
    """The error an answer carries, short: ``{"error": {...}}``'s message, or its text."""
    data = _json(response)
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        error = data["error"]
        text = str(error.get("message", ""))
        if error.get("hint"):
            text += f" ({error['hint']})"
        return text[:1000]
    if data is not None:
        return orjson.dumps(data).decode()[:1000]
    return response.text[:1000]


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class LocalTransport:
    """Writes straight into the store named by ``FLYWHEEL_DATABASE_URL``.

    The store (SQLAlchemy) is imported only here, so an agent that sends to a
    server never loads it.
    """

    def __init__(self, settings: Settings) -> None:
        from flywheel.ingest import Ingestor
        from flywheel.store import Store

        self.store = Store.open(settings)
        self.ingestor = Ingestor(self.store, settings)

    def __call__(self, body: bytes) -> Delivery:
        try:
            result = self.ingestor.ingest_body(body)
        except PayloadTooLarge as exc:
            return Delivery(SendOutcome.SPLIT, status=exc.status, message=exc.message)
        except FlywheelError as exc:
            outcome = SendOutcome.REFUSED if exc.status < 500 else SendOutcome.RETRY
            return Delivery(outcome, status=exc.status, message=str(exc))
        except Exception as exc:  # what a server would answer with a 500
            return Delivery(SendOutcome.RETRY, status=500, message=f"{type(exc).__name__}: {exc}")
        return Delivery(SendOutcome.DELIVERED, [e.as_dict() for e in result.rejected])

    def healthy(self) -> bool:
        from sqlalchemy import text

        try:
            with self.store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    def agent_version(self, workload: str, session_id: str | None) -> Any:
        from flywheel.deploy import route

        return route(self.store, workload, session_id)

    def artefact(self, ref: str) -> bytes:
        from flywheel.store import artefacts

        return artefacts.get_artefact(self.store, ref)[1]

    def close(self) -> None:
        self.store.close()
