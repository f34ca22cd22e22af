"""``flywheel.init()`` and the client an agent logs through."""

from __future__ import annotations

import atexit
import logging
import re
import threading
import time
import weakref
from typing import Any

import orjson

from flywheel.config import Settings
from flywheel.records import AgentVersion, new_id
from flywheel.sdk.pipeline import Pipeline, Spool, encode_event
from flywheel.sdk.task import TaskContext, current_task

log = logging.getLogger(__name__)

__all__ = ["Flywheel", "init"]

_CONFIG_TTL = 30.0
_live: weakref.WeakSet[Flywheel] = weakref.WeakSet()


def _close_all() -> None:
    for client in list(_live):
        client.close()


atexit.register(_close_all)


class Flywheel:
    """Logs one workload's tasks. Create it with ``flywheel.init(workload=...)``.

    With ``FLYWHEEL_URL`` set, events go to that server; without it, into the
    local store (``FLYWHEEL_DATABASE_URL``, a SQLite file by default). Either
    way they are batched by a background thread and spooled to disk when they
    cannot be delivered; no method raises into the agent or waits on the network,
    except ``flush`` and ``agent_config`` (bounded by a short timeout).
    """

    def __init__(self, workload: str, settings: Settings) -> None:
        if not workload or not re.fullmatch(r"[^\x00-\x1f]{1,200}", workload):
            raise ValueError("workload must be a non-empty name of at most 200 characters")
        self.workload = workload
        self.settings = settings
        if settings.url:
            from flywheel.sdk.transport import HttpTransport

            self.transport: Any = HttpTransport(settings)
        else:
            from flywheel.sdk.transport import LocalTransport

            self.transport = LocalTransport(settings)
        safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", workload)[:60]
        self.pipeline = Pipeline(
            self.transport,
            Spool(settings.spool_dir, safe_name),
            batch_size=settings.sdk_batch_size,
            queue_size=settings.sdk_queue_size,
            interval=settings.sdk_flush_interval,
            quarantine_attempts=settings.sdk_quarantine_attempts,
            quarantine_after=settings.sdk_quarantine_after,
        )
        self._put = self.pipeline.put
        self._configs: dict[str | None, tuple[float, AgentVersion | None]] = {}
        self._config_lock = threading.Lock()
        self._closed = False
        self.encode_errors = 0
        _live.add(self)

    # ------------------------------------------------------------ logging

    def _emit(self, event: dict[str, Any]) -> None:
        try:
            self._put(encode_event(event))
        except Exception:  # the agent must not see our failures
            self.encode_errors += 1
            log.exception("flywheel: could not encode a %s event", event.get("type"))

    def task(
        self,
        *,
        session_id: str | None = None,
        input: Any = None,
        id: str | None = None,
        agent_version: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> TaskContext:
        """A task: ``with fw.task(...) as task:`` or ``@fw.task(...)`` on a function."""
        return TaskContext(
            self,
            id=id,
            session_id=session_id,
            input=input,
            agent_version=agent_version,
            metadata=metadata,
        )

    def feedback(
        self,
        task_id: str,
        *,
        thumbs: int | None = None,
        rating: int | None = None,
        comment: str | None = None,
        edited: bool = False,
        edited_output: Any = None,
        retried: bool = False,
        abandoned: bool = False,
        source: str = "user",
        id: str | None = None,
        at: float | None = None,
    ) -> str:
        """An end user's reaction to a task (explicit or implicit). Returns its id.
        ``at`` (Unix seconds) is when it happened, if not now."""
        event_id = id or new_id()
        self._emit(
            {
                "type": "feedback",
                "id": event_id,
                "task_id": task_id,
                "thumbs": thumbs,
                "rating": rating,
                "comment": comment,
                "edited": edited or edited_output is not None,
                "edited_output": edited_output,
                "retried": retried,
                "abandoned": abandoned,
                "source": source,
                "at": time.time() if at is None else at,
            }
        )
        return event_id

    def correct(
        self,
        task_id: str,
        *,
        output: Any = None,
        tool_calls: list[dict[str, Any]] | None = None,
        author: str = "sdk",
        id: str | None = None,
        at: float | None = None,
    ) -> str:
        """A human's corrected output or tool calls for a task. Returns its id."""
        event_id = id or new_id()
        self._emit(
            {
                "type": "correction",
                "id": event_id,
                "task_id": task_id,
                "output": output,
                "tool_calls": tool_calls,
                "author": author,
                "at": time.time() if at is None else at,
            }
        )
        return event_id

    def instrument_openai(self, client: Any) -> Any:
        """Capture every chat completion of an OpenAI (or compatible) client."""
        from flywheel.sdk.openai import instrument

        return instrument(self, client)

    # ------------------------------------------------------------ serving

    def agent_config(self, session_id: str | None = None) -> AgentVersion | None:
        """The agent version serving ``session_id`` (None before any is deployed).

        Cached for a short time; when the server cannot be reached the last
        known answer is used, so an agent keeps running offline. The current
        task (if any) records the version.
        """
        now = time.monotonic()
        with self._config_lock:
            cached = self._configs.get(session_id)
        if cached is None or now - cached[0] > _CONFIG_TTL:
            version = self._fetch_config(session_id, cached)
            with self._config_lock:
                self._configs[session_id] = (now, version)
        else:
            version = cached[1]
        task = current_task()
        if version is not None and task is not None and task.client is self and task.agent_version is None:
            task.agent_version = version.id
        return version

    def _fetch_config(
        self, session_id: str | None, cached: tuple[float, AgentVersion | None] | None
    ) -> AgentVersion | None:
        path = self.settings.home / "agent-config" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', self.workload)}.json"
        try:
            if hasattr(self.transport, "get"):
                data = self.transport.get(
                    "/v1/agent-config", {"workload": self.workload, "session_id": session_id}, 2.0
                )["version"]
                version = AgentVersion.model_validate(data) if data else None
            else:
                version = self.transport.agent_version(self.workload, session_id)
        except Exception as exc:
            if cached is not None:
                return cached[1]
            log.warning("flywheel: agent config unavailable (%s); using the last one saved", exc)
            try:
                return AgentVersion.model_validate_json(path.read_bytes())
            except (OSError, ValueError):
                return None
        if version is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(orjson.dumps(version.model_dump(mode="json")))
            except OSError as exc:  # only the offline fallback is lost; the agent goes on
                log.debug("flywheel: cannot save the agent config to %s: %s", path, exc)
        return version

    def artefact(self, ref: str) -> bytes:
        """The bytes of an artefact a version pins (``sha256:...``: a LoRA adapter,
        a knowledge-index snapshot), from the store or the server, kept in a
        local cache checked against the hash. Raises when it cannot be had."""
        import hashlib

        if not re.fullmatch(r"sha256:[0-9a-f]{64}", ref):
            raise ValueError(f"{ref!r} is not an artefact reference (sha256: and 64 hex digits)")
        digest = ref.removeprefix("sha256:")
        path = self.settings.home / "artefacts" / digest
        try:
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() == digest:
                return data
        except OSError:  # not cached yet
            pass
        data = self.transport.artefact(ref)
        if hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f"artefact {ref} came back with other bytes than its hash names")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{new_id()}.part")
            partial.write_bytes(data)
            partial.replace(path)
        except OSError as exc:  # only the cache is lost
            log.debug("flywheel: cannot cache artefact %s: %s", ref, exc)
        return data

    # ------------------------------------------------------------ control

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Deliver everything logged so far. True when all of it was delivered;
        False when some of it waits in the disk spool (the server is away)."""
        return self.pipeline.flush(timeout)

    def stats(self) -> dict[str, int]:
        """Counts of this client, in events: logged, sent, spooled, replayed,
        rejected (refused for good by the server), quarantined (refused with 5xx
        beyond the bound), dead_lettered (of those two, written to
        ``dead-letter.jsonl`` in the spool folder), dropped (refused by the disk),
        queued; and spool_files, errors, encode_errors."""
        return {**self.pipeline.stats(), "encode_errors": self.encode_errors}

    def close(self, timeout: float = 5.0) -> None:
        """Flush (up to ``timeout`` s), spool what is left, stop. Runs at exit too."""
        if self._closed:
            return
        self._closed = True
        self.pipeline.close(timeout)
        self.transport.close()
        _live.discard(self)

    def __enter__(self) -> Flywheel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def init(
    workload: str,
    *,
    url: str | None = None,
    api_key: str | None = None,
    database_url: str | None = None,
    settings: Settings | None = None,
    **overrides: Any,
) -> Flywheel:
    """Start logging ``workload``. Arguments override ``FLYWHEEL_*`` variables."""
    settings = settings or Settings()
    update = {k: v for k, v in {"url": url, "api_key": api_key, "database_url": database_url}.items() if v}
    update.update(overrides)
    if update:
        settings = Settings.model_validate({**settings.model_dump(), **update})
    return Flywheel(workload, settings)
