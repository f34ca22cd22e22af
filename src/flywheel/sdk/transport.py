"""Where the SDK's batches go: a server over HTTP, or the local store in-process."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import orjson

from flywheel.config import Settings
from flywheel.sdk.pipeline import Delivery, SendOutcome

log = logging.getLogger(__name__)

__all__ = ["HttpTransport", "LocalTransport"]

_RETRY_STATUSES = {401, 403, 408, 425, 429}


class HttpTransport:
    """``POST /v1/events`` with the client's key; maps answers to delivery outcomes."""

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
        if status == 200:
            rejected = response.json().get("rejected", [])
            for error in rejected[:5]:
                log.warning("flywheel: server rejected an event: %s", error)
            return Delivery(SendOutcome.DELIVERED, len(rejected))
        if status == 413:
            return Delivery(SendOutcome.SPLIT)
        if status in _RETRY_STATUSES or status >= 500:
            if status in (401, 403) and status not in self._warned:
                self._warned.add(status)
                log.error(
                    "flywheel: %s refused the key (%d); events are kept in the spool until "
                    "FLYWHEEL_API_KEY is fixed: %s",
                    self.base_url,
                    status,
                    response.text[:200],
                )
            return Delivery(SendOutcome.RETRY)
        # 400 / 422: the events themselves are bad; sending them again cannot help.
        log.error("flywheel: server refused a batch (%d): %s", status, _rejections(response))
        return Delivery(SendOutcome.DELIVERED, rejected=None)

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


def _rejections(response: httpx.Response) -> str:
    try:
        return orjson.dumps(response.json()).decode()[:500]
    except ValueError:
        return response.text[:500]


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
        result = self.ingestor.ingest_body(body)
        for error in result.rejected[:5]:
            log.warning("flywheel: rejected an event: %s", error.as_dict())
        return Delivery(SendOutcome.DELIVERED, len(result.rejected))

    def agent_version(self, workload: str, session_id: str | None) -> Any:
        from flywheel.deploy import route

        return route(self.store, workload, session_id)

    def artefact(self, ref: str) -> bytes:
        from flywheel.store import artefacts

        return artefacts.get_artefact(self.store, ref)[1]

    def close(self) -> None:
        self.store.close()
