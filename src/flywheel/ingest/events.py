"""Decoding a batch of events: JSON -> validated events -> redacted rows.

A batch is ``{"events": [...]}`` (or a bare JSON array). The whole batch is
validated at once (fast, in pydantic-core); only when that fails is each event
validated alone, so that every bad event gets its own error and the good ones
are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from flywheel.errors import InvalidInput, PayloadTooLarge
from flywheel.ingest.redact import FieldTooLong, Redactor
from flywheel.records import (
    STEP_EVENT_TYPES,
    AnnotationEvent,
    CorrectionEvent,
    FeedbackEvent,
    TaskFinishedEvent,
    TaskStartedEvent,
    event_adapter,
    events_adapter,
    utcnow,
)
from flywheel.store import RowBatch

__all__ = ["EventError", "PreparedBatch", "parse_body", "prepare_events"]

_STEP_COMMON = {"type", "id", "task_id", "seq", "started_at", "ended_at", "error"}


@dataclass
class EventError:
    """Why the event at ``index`` of a batch was rejected."""

    index: int
    id: str | None
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "field": self.field, "message": self.message}


@dataclass
class PreparedBatch:
    rows: RowBatch
    received: int
    rejected: list[EventError] = field(default_factory=list)


def parse_body(body: bytes, *, max_events: int) -> list[Any]:
    """The list of raw events in a request body, or a request-level error."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not valid UTF-8 JSON: {exc}") from exc
    if isinstance(data, dict) and set(data) == {"events"}:
        data = data["events"]
    if not isinstance(data, list):
        raise InvalidInput('the body must be {"events": [...]} or a JSON array of events')
    if len(data) > max_events:
        raise PayloadTooLarge(
            f"the batch has {len(data)} events; the limit is {max_events}",
            hint="split it into smaller batches",
        )
    return data


def prepare_events(items: list[Any], redactor: Redactor) -> PreparedBatch:
    """Validate, redact and turn events into rows; bad events become errors."""
    prepared = PreparedBatch(rows=RowBatch(), received=len(items))
    try:
        events = list(enumerate(events_adapter.validate_python(items)))
    except ValidationError:
        events = []
        for index, item in enumerate(items):
            try:
                events.append((index, event_adapter.validate_python(item)))
            except ValidationError as exc:
                prepared.rejected.append(_validation_error(index, item, exc))
    now = utcnow()
    for index, event in events:
        try:
            _add_rows(prepared.rows, event, redactor, now)
        except FieldTooLong as exc:
            prepared.rejected.append(EventError(index, event.id, exc.path.lstrip("."), str(exc).lstrip(".")))
    return prepared


def _validation_error(index: int, item: Any, exc: ValidationError) -> EventError:
    first = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(event)"
    message = first["msg"]
    if len(exc.errors()) > 1:
        message += f" (and {len(exc.errors()) - 1} more problem(s))"
    item_id = item.get("id") if isinstance(item, dict) else None
    return EventError(index, item_id if isinstance(item_id, str) else None, loc, message)


def _ms(start: datetime, end: datetime | None) -> float | None:
    return (end - start).total_seconds() * 1000 if end is not None else None


def _add_rows(rows: RowBatch, event: Any, redactor: Redactor, now: datetime) -> None:
    kind = event.type
    if kind in STEP_EVENT_TYPES:
        data = event.model_dump(mode="json", exclude=_STEP_COMMON)
        data, n = redactor.value(data, "")
        error, n_err = redactor.value(event.error, "error") if event.error else (None, 0)
        name = data.get("model") or data.get("name")
        rows.steps.append(
            {
                "id": event.id,
                "task_id": event.task_id,
                "seq": event.seq,
                "kind": kind,
                "name": name if isinstance(name, str) else None,
                "started_at": event.started_at,
                "ended_at": event.ended_at,
                "latency_ms": _ms(event.started_at, event.ended_at),
                "error": error,
                "data": data,
                "redactions": n + n_err,
                "ingested_at": now,
            }
        )
    elif isinstance(event, TaskStartedEvent | TaskFinishedEvent):
        finished = isinstance(event, TaskFinishedEvent)
        content = {
            "input": event.input,
            "metadata": event.metadata,
            "output": event.output if finished else None,
            "error": event.error if finished else None,
        }
        content, n = redactor.value(content, "")
        row = {
            "id": event.id,
            "workload": event.workload,
            "session_id": event.session_id,
            "agent_version": event.agent_version,
            "input": content["input"],
            "output": content["output"],
            "success": event.success if finished else None,
            "confidence": event.confidence if finished else None,
            "error": content["error"],
            "started_at": event.started_at,
            "ended_at": event.ended_at if finished else None,
            "duration_ms": _ms(event.started_at, event.ended_at) if finished else None,
            "metadata": content["metadata"],
            "redactions": n,
            "ingested_at": now,
        }
        (rows.tasks_finished if finished else rows.tasks_started).append(row)
    elif isinstance(event, FeedbackEvent):
        comment, n1 = redactor.value(event.comment, "comment")
        edited_output, n2 = redactor.value(event.edited_output, "edited_output")
        rows.feedback.append(
            {
                "id": event.id,
                "task_id": event.task_id,
                "thumbs": event.thumbs,
                "rating": event.rating,
                "comment": comment,
                "edited": event.edited,
                "edited_output": edited_output,
                "retried": event.retried,
                "abandoned": event.abandoned,
                "source": event.source,
                "at": event.at,
                "redactions": n1 + n2,
                "ingested_at": now,
            }
        )
    elif isinstance(event, CorrectionEvent):
        body = event.model_dump(mode="json", include={"output", "tool_calls"})
        body, n = redactor.value(body, "")
        rows.corrections.append(
            {
                "id": event.id,
                "task_id": event.task_id,
                "output": body["output"],
                "tool_calls": body["tool_calls"],
                "author": event.author,
                "at": event.at,
                "redactions": n,
                "ingested_at": now,
            }
        )
    elif isinstance(event, AnnotationEvent):
        data, n = redactor.value(event.annotation.model_dump(mode="json"), "annotation")
        rows.annotations.append(
            {
                "id": event.id,
                "task_id": event.task_id,
                "kind": event.annotation.kind,
                "data": data,
                "author": event.author,
                "at": event.at,
                "redactions": n,
                "ingested_at": now,
            }
        )
    else:  # pragma: no cover - the Event union and this function change together
        raise AssertionError(f"no rows for event type {kind!r}")
