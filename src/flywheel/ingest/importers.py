"""Importing existing logs from files: OpenAI chat-completion JSONL and OTLP/JSON.

``openai-jsonl``: one JSON object per line, either a request/response record
(what NVIDIA's Data Flywheel Blueprint ingests: ``request``, ``response``,
``workload_id``, ``client_id``, ``timestamp``) or a chat transcript
(``messages`` [+ ``tools``], whose last assistant message is the response).
Each line becomes a finished task with one ``llm_call`` step.

``otlp-json``: OTLP/JSON trace or logs exports, one per line (the OpenTelemetry
Collector's file exporter) or one document; each trace is assembled into a
task as the OTLP endpoints do.

Ids derive from the line's content, so importing a file twice stores nothing
twice. Bad lines are reported by number and skipped.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from flywheel.errors import FlywheelError, InvalidInput
from flywheel.ingest import Ingestor, PreparedBatch

__all__ = ["FORMATS", "ImportReport", "import_file"]

FORMATS = ("openai-jsonl", "otlp-json")
Format = Literal["openai-jsonl", "otlp-json"]

_NAMESPACE = uuid.UUID("6f1f0c3e-8d1a-4c55-9a53-2b1b5b0f7a11")
_CHUNK = 500


@dataclass
class ImportReport:
    lines: int = 0
    tasks: int = 0
    stored: int = 0
    duplicates: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    unpriced_calls: int = 0  # llm_calls with tokens of a model that has no price

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "tasks": self.tasks,
            "events_stored": self.stored,
            "events_duplicate": self.duplicates,
            "errors": self.errors,
            "unpriced_calls": self.unpriced_calls,
        }


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if line:
                yield number, line


def _time(value: Any) -> str:
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value / 1000 if value > 1e11 else value, UTC).isoformat()
        except (OverflowError, OSError, ValueError) as exc:
            raise InvalidInput(f"'timestamp' {value} is not a time: {exc}") from exc
    if isinstance(value, str) and value:
        return value
    return datetime.now(UTC).isoformat()


def openai_line_events(record: Any, line: bytes, workload: str | None) -> list[dict[str, Any]]:
    """The events of one chat-completion log line."""
    if not isinstance(record, dict):
        raise InvalidInput("a line must be a JSON object")
    if "request" in record:
        request = record["request"] or {}
        response: Any = record.get("response")
        if not isinstance(request, dict):
            raise InvalidInput(f"'request' must be an object, not {_kind(request)}")
        if response is not None and not isinstance(response, dict):
            raise InvalidInput(f"'response' must be an object, not {_kind(response)}")
        messages = _messages(request.get("messages"), "'request.messages'")
        tools = request.get("tools")
        model = request.get("model") or (response or {}).get("model")
        try:
            output = response["choices"][0]["message"]  # type: ignore[index]
        except (TypeError, KeyError, IndexError):
            output = None
    elif "messages" in record:
        messages = list(_messages(record["messages"] or [], "'messages'"))
        tools = record.get("tools")
        model = record.get("model")
        output = messages.pop() if messages and messages[-1].get("role") == "assistant" else None
        response = {"choices": [{"index": 0, "message": output}]} if output else None
    else:
        raise InvalidInput("a line needs 'request' and 'response', or 'messages'")
    workload = record.get("workload_id") or record.get("workload") or workload
    if not workload:
        raise InvalidInput("no workload: the line has no workload_id; pass --workload")
    task_id = str(uuid.uuid5(_NAMESPACE, hashlib.sha256(line).hexdigest()))
    at = _time(record.get("timestamp"))
    session = str(record.get("client_id") or record.get("session_id") or task_id)
    usage = (response or {}).get("usage") or {}
    if not isinstance(usage, dict):
        raise InvalidInput(f"'response.usage' must be an object, not {_kind(usage)}")
    return [
        {
            "type": "task_finished",
            "id": task_id,
            "workload": str(workload),
            "session_id": session,
            "input": messages,
            "started_at": at,
            "ended_at": at,
            "output": output,
            "success": output is not None,
            "metadata": {"source": "import:openai-jsonl"},
        },
        {
            "type": "llm_call",
            "id": str(uuid.uuid5(_NAMESPACE, task_id + ":llm")),
            "task_id": task_id,
            "started_at": at,
            "ended_at": at,
            "model": str(model or "unknown"),
            "messages": messages,
            "tools": tools,
            "response": response,
            "input_tokens": usage.get("prompt_tokens"),
            "output_tokens": usage.get("completion_tokens"),
        },
    ]


def _kind(value: Any) -> str:
    """What a JSON value is, in words, for an error message."""
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )


def _messages(value: Any, name: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise InvalidInput(f"{name} must be a list of message objects, not {_kind(value)}")
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise InvalidInput(f"{name}[{i}] must be a message object, not {_kind(message)}")
    return value


_OTLP_KEYS = ("resourceSpans", "resource_spans", "resourceLogs", "resource_logs")


def _otlp_signal(line: bytes) -> str:
    """``traces`` or ``logs``: which OTLP/JSON export a line is (or InvalidInput)."""
    try:
        document = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"not JSON: {exc}") from exc
    keys = [k for k in _OTLP_KEYS if isinstance(document, dict) and k in document]
    if not keys:
        found = f" with keys {sorted(document)[:5]}" if isinstance(document, dict) else ""
        raise InvalidInput(
            "not an OTLP/JSON export: expected an object with resourceSpans or resourceLogs, "
            f"got {_kind(document)}{found}"
        )
    if not isinstance(document[keys[0]], list):
        raise InvalidInput(f"'{keys[0]}' must be a list, not {_kind(document[keys[0]])}")
    return "logs" if "Logs" in keys[0] or "logs" in keys[0] else "traces"


def _prepare_otlp_line(ingestor: Ingestor, line: bytes) -> tuple[PreparedBatch, bool]:
    """One OTLP/JSON export line, decoded and checked; True when it is logs."""
    logs = _otlp_signal(line) == "logs"
    prepare = ingestor.prepare_logs if logs else ingestor.prepare_traces
    prepared, _ = prepare(line, "application/json")
    return prepared, logs


def _write_otlp_line(
    ingestor: Ingestor, prepared: PreparedBatch, logs: bool, number: int, report: ImportReport
) -> None:
    result = ingestor.write(prepared)
    if not logs:
        report.tasks += len({row["task_id"] for row in prepared.rows.otel_records})
    report.stored += result.stored
    report.duplicates += result.duplicates
    report.unpriced_calls += result.unpriced_calls
    for error in result.rejected:
        report.errors.append({"line": number, "field": error.field, "message": error.message})


def import_file(
    ingestor: Ingestor,
    path: Path,
    fmt: Format,
    *,
    workload: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import ``path``; ``progress`` is called with the bytes read so far."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}; choose one of {list(FORMATS)}")
    if not path.is_file():
        raise InvalidInput(f"no such file: {path}")
    report = ImportReport()
    pending: list[dict[str, Any]] = []
    origin: list[int] = []  # line number of each pending event
    read = 0

    def flush() -> None:
        if not pending:
            return
        result = ingestor.ingest(pending)
        report.stored += result.stored
        report.duplicates += result.duplicates
        report.unpriced_calls += result.unpriced_calls
        for error in result.rejected:
            report.errors.append(
                {"line": origin[error.index], "field": error.field, "message": error.message}
            )
        pending.clear()
        origin.clear()

    for number, line in _lines(path):
        report.lines += 1
        read += len(line) + 1
        try:
            if fmt == "openai-jsonl":
                events = openai_line_events(orjson.loads(line), line, workload)
            else:
                prepared, logs = _prepare_otlp_line(ingestor, line)
        except orjson.JSONDecodeError as exc:
            report.errors.append({"line": number, "field": "(line)", "message": f"not JSON: {exc}"})
            continue
        except FlywheelError as exc:
            report.errors.append({"line": number, "field": "(line)", "message": exc.message})
            continue
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
            # A shape no check above foresaw: this line is bad, the others may be fine.
            report.errors.append(
                {"line": number, "field": "(line)", "message": f"cannot read it: {type(exc).__name__}: {exc}"}
            )
            continue
        if fmt != "openai-jsonl":
            _write_otlp_line(ingestor, prepared, logs, number, report)
            if progress:
                progress(read)
            continue
        report.tasks += len({e["id"] for e in events if e["type"].startswith("task_")})
        pending.extend(events)
        origin.extend([number] * len(events))
        if len(pending) >= _CHUNK:
            flush()
            if progress:
                progress(read)
    flush()
    if progress:
        progress(read)
    return report
