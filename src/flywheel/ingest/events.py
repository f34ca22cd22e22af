"""Decoding a batch of events: JSON -> validated events -> redacted rows.

A batch is ``{"events": [...]}`` (or a bare JSON array). The whole batch is
validated at once (fast, in pydantic-core); only when that fails is each event
validated alone, so that every bad event gets its own error and the good ones
are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import TypeAdapter, ValidationError

from flywheel.errors import InvalidInput, PayloadTooLarge
from flywheel.ingest.redact import FieldTooLong, Redactor
from flywheel.messages import normalize_completion, normalize_messages, normalize_tools
from flywheel.models.pricing import PriceTable
from flywheel.records import (
    STEP_EVENT_TYPES,
    AnnotationEvent,
    CorrectionEvent,
    Event,
    FeedbackEvent,
    LLMCallEvent,
    TaskFinishedEvent,
    TaskStartedEvent,
    event_adapter,
    events_adapter,
    utcnow,
)
from flywheel.store import RowBatch

__all__ = ["EventError", "PreparedBatch", "parse_body", "prepare_body", "prepare_events"]

_envelope_adapter: TypeAdapter[dict[Literal["events"], list[Event]]] = TypeAdapter(
    dict[Literal["events"], list[Event]]
)

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
    #: llm_calls with tokens but no cost whose model has no price, by model
    unpriced: dict[str, int] = field(default_factory=dict)


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


def prepare_body(
    body: bytes, redactor: Redactor, *, max_events: int, prices: PriceTable | None = None
) -> PreparedBatch:
    """Validate, redact and turn a request body into rows.

    The fast path validates the JSON bytes directly and, when the serialised
    batch holds nothing a redaction rule could match, skips the field walk.
    """
    try:
        stripped = body.lstrip()
        if stripped[:1] == b"[":
            events = events_adapter.validate_json(body)
        else:
            events = _envelope_adapter.validate_json(body)["events"]
    except (ValidationError, ValueError):
        return prepare_events(parse_body(body, max_events=max_events), redactor, prices)
    if len(events) > max_events:
        raise PayloadTooLarge(
            f"the batch has {len(events)} events; the limit is {max_events}",
            hint="split it into smaller batches",
        )
    if redactor.needs_walk(body):
        return prepare_events(parse_body(body, max_events=max_events), redactor, prices)
    prepared = PreparedBatch(rows=RowBatch(), received=len(events))
    now = utcnow()
    for event in events:
        _add_rows(prepared.rows, event, _as_is, now, prices, prepared.unpriced)
    return prepared


def prepare_events(items: list[Any], redactor: Redactor, prices: PriceTable | None = None) -> PreparedBatch:
    """Validate, redact and turn events into rows; bad events become errors.

    With ``prices``, an ``llm_call`` that reports its tokens but no cost is
    priced; one whose model has no price keeps no cost and is counted in
    ``unpriced``.
    """
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
        walk = redactor.needs_walk(orjson.dumps(items[index], option=orjson.OPT_NON_STR_KEYS))
        try:
            clean = redactor.value if walk else _as_is
            _add_rows(prepared.rows, event, clean, now, prices, prepared.unpriced)
        except FieldTooLong as exc:
            prepared.rejected.append(EventError(index, event.id, exc.path.lstrip("."), str(exc).lstrip(".")))
    return prepared


def _as_is(value: Any, path: str = "") -> tuple[Any, int]:
    return value, 0


def _validation_error(index: int, item: Any, exc: ValidationError) -> EventError:
    first = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(event)"
    message = first["msg"]
    if len(exc.errors()) > 1:
        message += f" (and {len(exc.errors()) - 1} more problem(s))"
    item_id = item.get("id") if isinstance(item, dict) else None
    return EventError(index, item_id if isinstance(item_id, str) else None, loc, message)


def _priced(event: LLMCallEvent, prices: PriceTable, unpriced: dict[str, int] | None) -> float | None:
    """The cost of a call from its tokens; None (and counted) when its model has no price."""
    if event.input_tokens is None or event.output_tokens is None:
        return None
    cost = prices.cost(event.model, event.input_tokens, event.output_tokens)
    if cost is None and unpriced is not None:
        unpriced[event.model] = unpriced.get(event.model, 0) + 1
    return cost


def _ms(start: datetime, end: datetime | None) -> float | None:
    return (end - start).total_seconds() * 1000 if end is not None else None


Clean = Callable[[Any, str], tuple[Any, int]]


def _normalize_call(data: dict[str, Any]) -> None:
    """An llm_call's messages, tools and answer in the one message model
    (``flywheel.messages``); a value no chat shape explains is kept as it came."""
    messages = data.get("messages") or []
    if all(isinstance(m, dict | str) for m in messages):
        data["messages"] = normalize_messages(messages)
    if data.get("tools") is not None:
        data["tools"] = normalize_tools(data["tools"]) or data["tools"]
    if data.get("response") is not None:
        completion = normalize_completion(data["response"])
        if completion is not None:
            data["response"] = completion


def _add_rows(
    rows: RowBatch,
    event: Any,
    clean: Clean,
    now: datetime,
    prices: PriceTable | None = None,
    unpriced: dict[str, int] | None = None,
) -> None:
    """Append the rows of one event; ``clean`` redacts (or passes through) its content."""
    kind = event.type
    if kind in STEP_EVENT_TYPES:
        data = event.model_dump(mode="json", exclude=_STEP_COMMON)
        data, n = clean(data, "")
        if kind == "llm_call":
            _normalize_call(data)
        error, n_err = clean(event.error, "error") if event.error else (None, 0)
        if prices is not None and isinstance(event, LLMCallEvent) and event.cost is None:
            data["cost"] = _priced(event, prices, unpriced)
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
        finished = event if isinstance(event, TaskFinishedEvent) else None
        content = {
            "input": event.input,
            "metadata": event.metadata,
            "output": finished.output if finished else None,
            "error": finished.error if finished else None,
        }
        content, n = clean(content, "")
        row = {
            "id": event.id,
            "workload": event.workload,
            "session_id": event.session_id,
            "agent_version": event.agent_version,
            "input": content["input"],
            "output": content["output"],
            "success": finished.success if finished else None,
            "confidence": finished.confidence if finished else None,
            "error": content["error"],
            "started_at": event.started_at,
            "ended_at": finished.ended_at if finished else None,
            "duration_ms": _ms(event.started_at, finished.ended_at) if finished else None,
            "metadata": content["metadata"],
            "redactions": n,
            "ingested_at": now,
        }
        (rows.tasks_finished if finished else rows.tasks_started).append(row)
    elif isinstance(event, FeedbackEvent):
        comment, n1 = clean(event.comment, "comment")
        edited_output, n2 = clean(event.edited_output, "edited_output")
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
        body, n = clean(body, "")
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
        data, n = clean(event.annotation.model_dump(mode="json"), "annotation")
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
