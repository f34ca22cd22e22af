"""Decoding a batch of events: JSON -> validated events -> redacted rows.

A batch is ``{"events": [...]}`` (or a bare JSON array). It is read once and
validated in slices of events (fast, in pydantic-core, and short enough that
no single call holds the GIL for long); only a slice that fails has each of
its events validated alone, so that every bad event gets its own error and the
good ones are kept.

Whatever is wrong with one event is that event's error, never the batch's:
besides its fields, a value JSON columns cannot hold exactly (NaN or an
infinity, an integer outside 64 bits, a lone surrogate, nesting deeper than
``MAX_DEPTH``) and a name that redaction made longer than a column holds.
Only a body that is not JSON at all, or not a list of events, is refused whole.

Labels sent through the API belong to the key that sent them (``Sender``):
their ``author`` (a feedback's ``source``) is ``key:NAME`` whatever the body
says, and an annotation needs a key with the review scope.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError
from pydantic_core import from_json

from flywheel.errors import InvalidInput, PayloadTooLarge
from flywheel.ingest.redact import FieldTooLong, Redactor
from flywheel.messages import normalize_completion, normalize_messages, normalize_tools
from flywheel.models.pricing import PriceTable
from flywheel.records import (
    MAX_NAME,
    STEP_EVENT_TYPES,
    AnnotationEvent,
    CorrectionEvent,
    FeedbackEvent,
    LLMCallEvent,
    TaskFinishedEvent,
    TaskStartedEvent,
    event_adapter,
    events_adapter,
    utcnow,
)
from flywheel.store import RowBatch

__all__ = [
    "MAX_DEPTH",
    "EventError",
    "PreparedBatch",
    "Sender",
    "json_problem",
    "parse_body",
    "prepare_body",
    "prepare_events",
]

_STEP_COMMON = {"type", "id", "task_id", "seq", "started_at", "ended_at", "error"}

#: The deepest an event may nest (the event object is level 1): what the fast
#: path's parser takes, and well inside what the store's JSON encoder writes.
MAX_DEPTH = 200

#: Digits as 0 and E as e: in a body so translated, a long integer or a long
#: exponent is a plain substring, found at memchr speed (a regex over a 16 MB
#: body would hold the GIL for most of a second).
_NUMBERS = bytes.maketrans(b"123456789E", b"000000000e")
_BEFORE_NUMBER = frozenset(b":,[ \t\n\r")


def _maybe_inexact(body: bytes) -> bool:
    """Whether the body may hold a number the strict reader keeps inexactly: NaN or
    an infinity, an integer too long for 64 bits, an exponent that may overflow.

    Only a token where JSON has numbers counts (after ``:``, ``,``, ``[`` or
    white space), so hex ids with ``4e123`` in them do not; text that looks the
    same only costs the check of every value. Linear in the body."""
    for word in (b"NaN", b"Infinity"):
        at = body.find(word)
        while at != -1:
            if _starts_number(body, at):
                return True
            at = body.find(word, at + 1)
    digits = body.translate(_NUMBERS)
    at = digits.find(b"0" * 19)
    while at != -1:
        start = at
        while start > 0 and digits[start - 1] == 0x30:
            start -= 1
        if _starts_number(body, start):
            return True
        end = at + 19
        while end < len(digits) and digits[end] == 0x30:
            end += 1
        at = digits.find(b"0" * 19, end)
    for exponent in (b"e000", b"e+000"):
        at = digits.find(exponent)
        while at != -1:
            start = at
            while start > 0 and digits[start - 1] in b"0.":
                start -= 1
            if start < at and _starts_number(body, start):
                return True
            at = digits.find(exponent, at + 1)
    return False


def _starts_number(body: bytes, at: int) -> bool:
    """Whether a number token of JSON may start at ``at`` (a minus sign before it
    included)."""
    if at > 0 and body[at - 1] == 0x2D:
        at -= 1
    return at > 0 and body[at - 1] in _BEFORE_NUMBER


_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


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
    #: for each part of ``rows``, the index in the batch of the event of each row
    origins: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Sender:
    """The API key a batch came with: its labels are written in its name."""

    name: str
    scopes: tuple[str, ...]

    @property
    def author(self) -> str:
        return f"key:{self.name}"

    @property
    def may_annotate(self) -> bool:
        return bool({"review", "admin"} & set(self.scopes))


class _Refused(ValueError):
    """An event the rows cannot hold, with the field to blame."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _load(body: bytes) -> tuple[Any, bool]:
    """The body's JSON; True when it was read leniently, so that its values may
    hold what JSON columns cannot store exactly (``json_problem`` says which).

    Strict first (exact integers, no NaN, up to about 200 levels); else Python's
    reader, which takes NaN, infinities, lone surrogates and deeper nesting, so
    that such a value is its event's error rather than the whole batch's; a
    body nested too deep for it is read by orjson (1,024 levels) when no
    integer in it is long enough to come back inexact."""
    try:
        return from_json(body, allow_inf_nan=False), False
    except ValueError:
        pass
    try:
        return json.loads(body), True
    except RecursionError:
        pass
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidInput(f"the body is not valid UTF-8 JSON: {exc}") from exc
    if not _maybe_inexact(body):
        try:
            return orjson.loads(body), True
        except orjson.JSONDecodeError:
            pass
    raise InvalidInput(
        "the body nests JSON too deep to read (over 1,000 levels)",
        hint=f"an event may nest at most {MAX_DEPTH} levels",
    )


def parse_body(body: bytes, *, max_events: int) -> list[Any]:
    """The list of raw events in a request body, or a request-level error."""
    return _parse(body, max_events=max_events)[0]


def _parse(body: bytes, *, max_events: int) -> tuple[list[Any], bool]:
    data, lenient = _load(body)
    if isinstance(data, dict) and set(data) == {"events"}:
        data = data["events"]
    if not isinstance(data, list):
        raise InvalidInput('the body must be {"events": [...]} or a JSON array of events')
    if len(data) > max_events:
        raise PayloadTooLarge(
            f"the batch has {len(data)} events; the limit is {max_events}",
            hint="split it into smaller batches",
        )
    return data, lenient


def prepare_body(
    body: bytes,
    redactor: Redactor,
    *,
    max_events: int,
    prices: PriceTable | None = None,
    sender: Sender | None = None,
) -> PreparedBatch:
    """Validate, redact and turn a request body into rows.

    When the serialised batch holds nothing a redaction rule could match, the
    field walk is skipped; when it holds no number that could come back
    inexact and was read strictly, so is the check of every value.
    """
    items, lenient = _parse(body, max_events=max_events)
    check = lenient or _maybe_inexact(body)
    walk = None if redactor.needs_walk(body) else False
    return prepare_events(items, redactor, prices, sender=sender, check=check, walk=walk)


#: Events validated per call: each call holds the GIL, so a large batch is
#: validated in slices that let the server's other threads (its event loop) run.
_SLICE = 256


def prepare_events(
    items: list[Any],
    redactor: Redactor,
    prices: PriceTable | None = None,
    *,
    sender: Sender | None = None,
    check: bool = False,
    walk: bool | None = None,
) -> PreparedBatch:
    """Validate, redact and turn events into rows; bad events become errors.

    With ``prices``, an ``llm_call`` that reports its tokens but no cost is
    priced; one whose model has no price keeps no cost and is counted in
    ``unpriced``. With ``sender``, labels are written in its name and
    annotations need its review scope. With ``check``, every event's values
    are checked for what JSON columns cannot store (``json_problem``); else
    only an event the store's encoder refuses is. ``walk`` False: the caller
    knows that nothing needs redacting (and that every value encodes).
    """
    prepared = PreparedBatch(rows=RowBatch(), received=len(items))
    problems: dict[int, EventError] = {}
    if check:
        for index, item in enumerate(items):
            problem = json_problem(item)
            if problem is not None:
                problems[index] = _problem_error(index, item, problem)
    events: list[tuple[int, Any]] = []
    for start in range(0, len(items), _SLICE):
        indices = [i for i in range(start, min(start + _SLICE, len(items))) if i not in problems]
        try:
            events += zip(indices, events_adapter.validate_python([items[i] for i in indices]), strict=True)
        except ValidationError:
            for index in indices:
                try:
                    events.append((index, event_adapter.validate_python(items[index])))
                except ValidationError as exc:
                    problems[index] = _validation_error(index, items[index], exc)
    now = utcnow()
    for index, event in events:
        clean: Clean = _as_is
        if walk is not False:
            try:
                serialised = orjson.dumps(items[index], option=orjson.OPT_NON_STR_KEYS)
            except (orjson.JSONEncodeError, TypeError) as exc:
                found = json_problem(items[index]) or (
                    "(event)",
                    f"the event cannot be stored as JSON: {exc}",
                )
                problems[index] = _problem_error(index, items[index], found)
                continue
            if redactor.needs_walk(serialised):
                clean = redactor.value
        try:
            _add(prepared, index, event, clean, now, prices, sender)
        except FieldTooLong as exc:
            problems[index] = EventError(index, event.id, exc.path.lstrip("."), str(exc).lstrip("."))
        except _Refused as exc:
            problems[index] = EventError(index, event.id, exc.field, exc.message)
    prepared.rejected = [problems[i] for i in sorted(problems)]
    return prepared


def json_problem(value: Any) -> tuple[str, str] | None:
    """Where and why ``value`` (a decoded JSON event) holds something JSON columns
    cannot store exactly: (path, message), or None when it holds nothing such.

    Walks without recursion, so that any depth is answered."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                top = path.split(".", 1)[0] or "(event)"
                return top, f"{top} nests deeper than the limit of {MAX_DEPTH} levels"
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str) and not _utf8(key):
                    return path or "(event)", f"key {key!r} holds a lone surrogate, which is not UTF-8"
                stack.append((child, f"{path}.{key}" if path else str(key), depth + 1))
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not _INT_MIN <= item <= _INT_MAX:
                digits = str(item) if abs(item) < 10**40 else f"{str(item)[:20]}... ({len(str(item))} digits)"
                return path or "(event)", f"integer {digits} is outside 64 bits (-2^63 to 2^64-1)"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return path or "(event)", f"{item} is not a number JSON can hold (NaN and infinities are not)"
        elif isinstance(item, str) and not _utf8(item):
            return path or "(event)", "the text holds a lone surrogate (\\ud800-\\udfff), which is not UTF-8"
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _problem_error(index: int, item: Any, problem: tuple[str, str]) -> EventError:
    item_id = item.get("id") if isinstance(item, dict) else None
    return EventError(index, item_id if isinstance(item_id, str) else None, problem[0], problem[1])


def _as_is(value: Any, path: str = "") -> tuple[Any, int]:
    return value, 0


def _validation_error(index: int, item: Any, exc: ValidationError) -> EventError:
    first = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(event)"
    message = first["msg"].removeprefix("Value error, ")
    if len(exc.errors()) > 1:
        message += f" (and {len(exc.errors()) - 1} more problem(s))"
    item_id = item.get("id") if isinstance(item, dict) else None
    return EventError(index, item_id if isinstance(item_id, str) else None, loc, message)


def _priced(event: LLMCallEvent, prices: PriceTable) -> tuple[float | None, str | None]:
    """The cost of a call from its tokens, and the model when it has no price."""
    if event.input_tokens is None or event.output_tokens is None:
        return None, None
    cost = prices.cost(event.model, event.input_tokens, event.output_tokens)
    return cost, event.model if cost is None else None


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


def _add(
    prepared: PreparedBatch,
    index: int,
    event: Any,
    clean: Clean,
    now: datetime,
    prices: PriceTable | None,
    sender: Sender | None,
) -> None:
    """Append the row of one event and where it came from (raises when it is refused)."""
    part, row, unpriced = _row(event, clean, now, prices, sender)
    getattr(prepared.rows, part).append(row)
    prepared.origins.setdefault(part, []).append(index)
    if unpriced is not None:
        prepared.unpriced[unpriced] = prepared.unpriced.get(unpriced, 0) + 1


def _name(clean: Clean, value: str | None, field: str) -> tuple[str | None, int]:
    """A name column (workload, session, author...), redacted like any text; one that
    redaction made longer than the column is refused rather than cut."""
    if value is None:
        return None, 0
    out, n = clean(value, field)
    _fits(out, field)
    return out, n


def _fits(name: str, field: str) -> None:
    if len(name) > MAX_NAME:
        message = f"{field} is {len(name)} characters long after redaction; the limit is {MAX_NAME}"
        raise _Refused(field, message)


def _row(
    event: Any,
    clean: Clean,
    now: datetime,
    prices: PriceTable | None,
    sender: Sender | None,
) -> tuple[str, dict[str, Any], str | None]:
    """The part of a ``RowBatch`` one event goes to, its row, and the model of an
    unpriced call; ``clean`` redacts (or passes through) every text of it."""
    kind = event.type
    if kind in STEP_EVENT_TYPES:
        data = event.model_dump(mode="json", exclude=_STEP_COMMON)
        data, n = clean(data, "")
        if kind == "llm_call":
            _normalize_call(data)
        error, n_err = clean(event.error, "error") if event.error else (None, 0)
        unpriced = None
        if prices is not None and isinstance(event, LLMCallEvent) and event.cost is None:
            data["cost"], unpriced = _priced(event, prices)
        name = data.get("model") or data.get("name")
        if isinstance(name, str):
            _fits(name, "model" if kind == "llm_call" else "name")
        row = {
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
        return "steps", row, unpriced
    if isinstance(event, TaskStartedEvent | TaskFinishedEvent):
        finished = event if isinstance(event, TaskFinishedEvent) else None
        content = {
            "input": event.input,
            "metadata": event.metadata,
            "output": finished.output if finished else None,
            "error": finished.error if finished else None,
        }
        content, n = clean(content, "")
        workload, n1 = _name(clean, event.workload, "workload")
        session_id, n2 = _name(clean, event.session_id, "session_id")
        agent_version, n3 = _name(clean, event.agent_version, "agent_version")
        row = {
            "id": event.id,
            "workload": workload,
            "session_id": session_id,
            "agent_version": agent_version,
            "input": content["input"],
            "output": content["output"],
            "success": finished.success if finished else None,
            "confidence": finished.confidence if finished else None,
            "error": content["error"],
            "started_at": event.started_at,
            "ended_at": finished.ended_at if finished else None,
            "duration_ms": _ms(event.started_at, finished.ended_at) if finished else None,
            "metadata": content["metadata"],
            "redactions": n + n1 + n2 + n3,
            "ingested_at": now,
        }
        return ("tasks_finished" if finished else "tasks_started"), row, None
    if isinstance(event, FeedbackEvent):
        comment, n1 = clean(event.comment, "comment")
        edited_output, n2 = clean(event.edited_output, "edited_output")
        source, n3 = (sender.author, 0) if sender else _name(clean, event.source, "source")
        row = {
            "id": event.id,
            "task_id": event.task_id,
            "thumbs": event.thumbs,
            "rating": event.rating,
            "comment": comment,
            "edited": event.edited,
            "edited_output": edited_output,
            "retried": event.retried,
            "abandoned": event.abandoned,
            "source": source,
            "at": event.at,
            "redactions": n1 + n2 + n3,
            "ingested_at": now,
        }
        return "feedback", row, None
    if isinstance(event, CorrectionEvent):
        body = event.model_dump(mode="json", include={"output", "tool_calls"})
        body, n = clean(body, "")
        author, n1 = (sender.author, 0) if sender else _name(clean, event.author, "author")
        row = {
            "id": event.id,
            "task_id": event.task_id,
            "output": body["output"],
            "tool_calls": body["tool_calls"],
            "author": author,
            "at": event.at,
            "redactions": n + n1,
            "ingested_at": now,
        }
        return "corrections", row, None
    if isinstance(event, AnnotationEvent):
        if sender is not None and not sender.may_annotate:
            raise _Refused(
                "type",
                f"an annotation needs a key with the review scope; key {sender.name!r} has "
                f"{', '.join(sender.scopes) or 'no scope'} (send it with a review key, or to "
                "POST /v1/tasks/{task_id}/annotations with one)",
            )
        data, n = clean(event.annotation.model_dump(mode="json"), "annotation")
        author, n1 = (sender.author, 0) if sender else _name(clean, event.author, "author")
        row = {
            "id": event.id,
            "task_id": event.task_id,
            "kind": event.annotation.kind,
            "data": data,
            "author": author,
            "at": event.at,
            "redactions": n + n1,
            "ingested_at": now,
        }
        return "annotations", row, None
    # pragma: no cover - the Event union and this function change together
    raise AssertionError(f"no rows for event type {kind!r}")
