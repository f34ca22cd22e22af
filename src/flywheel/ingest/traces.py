"""OpenTelemetry records on their way in: checked and redacted one by one, kept,
and assembled into tasks per trace (``flywheel.ingest.otlp`` reads them).

A span is refused, with its index and why, when its ids are malformed, a field
is over the size limit, or the step it makes alone would not be valid (a time
in the future, an end before its start); the export's other records are kept.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from flywheel.ingest.events import EventError, PreparedBatch, prepare_events
from flywheel.ingest.otlp import OtlpRecords, assemble_trace, single_span_events
from flywheel.ingest.redact import FieldTooLong, Redactor
from flywheel.models.pricing import PriceTable
from flywheel.records import utcnow
from flywheel.store import RowBatch

__all__ = ["assemble_rows", "prepare_records"]

log = logging.getLogger(__name__)

#: The parts of a span or log record that hold logged content (redacted, size-checked).
_CONTENT = ("name", "status_message", "attributes", "events", "resource", "body", "event_name", "scope")


def prepare_records(otlp: OtlpRecords, redactor: Redactor, prices: PriceTable | None) -> PreparedBatch:
    """Redact and check an export's records; the good ones become ``otel_records`` rows."""
    prepared = PreparedBatch(rows=RowBatch(), received=otlp.received)
    now = utcnow()
    for record, index in zip(otlp.records, otlp.index_of_record, strict=True):
        if record["id"] is None:
            prepared.rejected.append(EventError(index, None, "span", record["problem"]))
            continue
        data = record["data"]
        redactions = 0
        # Content only: ids, times and status are ours to read, and an id of digits
        # can look like a card number.
        content = {k: data[k] for k in _CONTENT if k in data}
        try:
            if redactor.needs_walk(orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)):
                content, redactions = redactor.value(content, "")
                data = {**data, **content}
        except FieldTooLong as exc:
            prepared.rejected.append(EventError(index, record["span_id"], exc.path.lstrip("."), str(exc)))
            continue
        row = {
            "id": record["id"],
            "task_id": record["task_id"],
            "kind": record["kind"],
            "span_id": record["span_id"],
            "data": data,
            "redactions": redactions,
            "ingested_at": now,
        }
        if record["kind"] == "span":
            alone = prepare_events(single_span_events(row), redactor, prices)
            if alone.rejected:
                problem = alone.rejected[0]
                prepared.rejected.append(EventError(index, record["span_id"], problem.field, problem.message))
                continue
            for model, n in alone.unpriced.items():
                prepared.unpriced[model] = prepared.unpriced.get(model, 0) + n
        prepared.rows.otel_records.append(row)
    return prepared


def assemble_rows(
    task_id: str, records: list[dict[str, Any]], redactor: Redactor, prices: PriceTable | None
) -> RowBatch:
    """The rows of a trace's task and steps, built from all of its stored records.

    Records were redacted and checked when they came in; an event the assembly
    still cannot validate (a combination no single record showed) is logged and
    left out rather than failing the commit of the export.
    """
    prepared = prepare_events(assemble_trace(task_id, records), redactor, prices)
    for problem in prepared.rejected:
        log.warning("trace %s: assembled %s left out: %s", task_id, problem.field, problem.message)
    rows = prepared.rows
    # What the store holds of this trace stays where the new assembly is incomplete.
    rows.incomplete = bool(prepared.rejected)
    total = sum(int(r.get("redactions") or 0) for r in records)
    for task in rows.tasks_started + rows.tasks_finished:
        task["redactions"] = total
    for step in rows.steps:
        step["redactions"] = 0
    return rows
