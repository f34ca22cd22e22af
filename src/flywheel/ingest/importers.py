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
from flywheel.ingest import Ingestor

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
        return datetime.fromtimestamp(value / 1000 if value > 1e11 else value, UTC).isoformat()
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
        messages = request.get("messages")
        tools = request.get("tools")
        model = request.get("model") or (response or {}).get("model")
        try:
            output = response["choices"][0]["message"]
        except (TypeError, KeyError, IndexError):
            output = None
    elif "messages" in record:
        messages = list(record["messages"] or [])
        tools = record.get("tools")
        model = record.get("model")
        output = messages.pop() if messages and messages[-1].get("role") == "assistant" else None
        response = {"choices": [{"index": 0, "message": output}]} if output else None
    else:
        raise InvalidInput("a line needs 'request' and 'response', or 'messages'")
    if not isinstance(messages, list):
        raise InvalidInput("'messages' must be a list")
    workload = record.get("workload_id") or record.get("workload") or workload
    if not workload:
        raise InvalidInput("no workload: the line has no workload_id; pass --workload")
    task_id = str(uuid.uuid5(_NAMESPACE, hashlib.sha256(line).hexdigest()))
    at = _time(record.get("timestamp"))
    session = str(record.get("client_id") or record.get("session_id") or task_id)
    usage = (response or {}).get("usage") or {}
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


def _import_otlp_line(ingestor: Ingestor, line: bytes, number: int, report: ImportReport) -> None:
    logs = b'"resourceLogs"' in line or b'"resource_logs"' in line
    prepare = ingestor.prepare_logs if logs else ingestor.prepare_traces
    prepared, _ = prepare(line, "application/json")
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
                _import_otlp_line(ingestor, line, number, report)
                if progress:
                    progress(read)
                continue
        except orjson.JSONDecodeError as exc:
            report.errors.append({"line": number, "field": "(line)", "message": f"not JSON: {exc}"})
            continue
        except FlywheelError as exc:
            report.errors.append({"line": number, "field": "(line)", "message": exc.message})
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
