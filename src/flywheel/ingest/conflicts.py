"""An event id stored before: the same content is a retry, other content a conflict.

Writes are ``ON CONFLICT DO NOTHING``, so the first write of an id stays. After
a batch that met ids stored already, the rows it sent are compared with what
the store holds; an identical retry stays a silent duplicate, and an event
that carried other content under a stored id is reported as that event's
error (a conflict), so that a client learns its new content was not stored.
"""

from __future__ import annotations

from typing import Any

import orjson

from flywheel.ingest.events import EventError, PreparedBatch
from flywheel.store import Store
from flywheel.store.written import stored_rows

__all__ = ["find_conflicts"]

#: What a row's content is, per part: derived columns (latency, redaction
#: counts, the time of ingestion) are left out. A task's start is compared on
#: what its outcome does not overwrite; a value the event left out is not compared.
_CONTENT: dict[str, tuple[str, ...]] = {
    "tasks_started": ("workload", "session_id", "agent_version", "input"),
    "tasks_finished": (
        "workload",
        "session_id",
        "output",
        "success",
        "confidence",
        "error",
        "ended_at",
        "metadata",
    ),
    "steps": ("task_id", "seq", "kind", "name", "started_at", "ended_at", "error", "data"),
    "feedback": (
        "task_id",
        "thumbs",
        "rating",
        "comment",
        "edited",
        "edited_output",
        "retried",
        "abandoned",
        "source",
        "at",
    ),
    "corrections": ("task_id", "output", "tool_calls", "author", "at"),
    "annotations": ("task_id", "kind", "data", "author", "at"),
}
_OPTIONAL = {"tasks_started": {"agent_version", "input"}}
_JSON = {"input", "output", "metadata", "data", "edited_output", "tool_calls"}


def find_conflicts(store: Store, prepared: PreparedBatch) -> list[EventError]:
    """The events of ``prepared`` whose id the store holds with other content."""
    conflicts: list[EventError] = []
    for part, columns in _CONTENT.items():
        rows: list[dict[str, Any]] = getattr(prepared.rows, part)
        if not rows:
            continue
        stored = stored_rows(store, part, [r["id"] for r in rows], columns)
        origins = prepared.origins.get(part, [])
        for position, row in enumerate(rows):
            held = stored.get(row["id"])
            if held is None:
                continue
            differ = [
                name
                for name in columns
                if not (name in _OPTIONAL.get(part, ()) and row.get(name) is None)
                and _comparable(name, row.get(name)) != held[name]
            ]
            if differ:
                index = origins[position] if position < len(origins) else position
                conflicts.append(
                    EventError(
                        index,
                        row["id"],
                        "id",
                        f"conflict: id {row['id']!r} is stored already with other content "
                        f"({', '.join(differ)}); the first write stays and this event was not "
                        "stored (an identical retry is fine; new content needs a new id)",
                    )
                )
    return sorted(conflicts, key=lambda e: e.index)


def _comparable(name: str, value: Any) -> Any:
    """A value as the store gives it back (JSON through its encoder and decoder)."""
    if name in _JSON and value is not None:
        return orjson.loads(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))
    return value
