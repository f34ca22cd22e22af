"""Ingestion owns the way in: decoding events and OTLP spans, validation,
redaction, pricing, and bulk, idempotent, group-committed writes to the store.

``Ingestor`` is the one entry point: the server, the SDK's local mode and the
``flywheel import`` command all go through it, so every path validates,
redacts and prices the same way: an ``llm_call`` with tokens and no cost gets
its cost from the price table (built-in list prices and ``FLYWHEEL_PRICES``);
one whose model has no price keeps none and is counted as unpriced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flywheel.config import Settings
from flywheel.ingest.conflicts import find_conflicts
from flywheel.ingest.events import EventError, PreparedBatch, Sender, prepare_body, prepare_events
from flywheel.ingest.otlp import OtlpRecords, decode_logs, decode_traces, log_records, span_records
from flywheel.ingest.redact import Redactor
from flywheel.ingest.traces import assemble_rows, prepare_records
from flywheel.ingest.writer import BulkWriter
from flywheel.models.pricing import PriceTable
from flywheel.store import RowBatch, Store, WriteResult

__all__ = ["BulkWriter", "EventError", "IngestResult", "Ingestor", "PreparedBatch", "Redactor", "Sender"]


@dataclass
class IngestResult:
    """What happened to a batch: how many were stored, already known, or refused."""

    received: int
    stored: int
    duplicates: int
    rejected: list[EventError] = field(default_factory=list)
    #: llm_calls that reported tokens but no cost and whose model has no price, by model
    unpriced: dict[str, int] = field(default_factory=dict)

    @property
    def unpriced_calls(self) -> int:
        return sum(self.unpriced.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "accepted": self.stored + self.duplicates,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": [e.as_dict() for e in self.rejected],
            "unpriced_calls": self.unpriced_calls,
        }


class Ingestor:
    def __init__(self, store: Store, settings: Settings, *, group_commit: bool = False) -> None:
        self.store = store
        self.settings = settings
        self.redactor = Redactor(
            settings.redact, settings.redact_patterns, max_chars=settings.max_field_chars
        )
        self.prices = PriceTable.from_file(settings.prices)
        self.writer = BulkWriter(store, assemble=self.assemble) if group_commit else None

    def prepare_body(self, body: bytes, sender: Sender | None = None) -> PreparedBatch:
        """A batch's body checked, redacted and turned into rows. With ``sender``
        (the API key it came with), its labels are written in the key's name and
        its annotations need the review scope."""
        return prepare_body(
            body,
            self.redactor,
            max_events=self.settings.max_batch_events,
            prices=self.prices,
            sender=sender,
        )

    def prepare(self, items: list[Any]) -> PreparedBatch:
        return prepare_events(items, self.redactor, self.prices)

    def prepare_traces(self, body: bytes, content_type: str) -> tuple[PreparedBatch, OtlpRecords]:
        """An OTLP trace export's spans, checked and redacted (``flywheel.ingest.traces``)."""
        otlp = span_records(decode_traces(body, content_type))
        return prepare_records(otlp, self.redactor, self.prices), otlp

    def prepare_logs(self, body: bytes, content_type: str) -> tuple[PreparedBatch, OtlpRecords]:
        """An OTLP logs export's records that belong to a span (GenAI events)."""
        otlp = log_records(decode_logs(body, content_type))
        return prepare_records(otlp, self.redactor, self.prices), otlp

    def assemble(self, task_id: str, records: list[dict[str, Any]]) -> RowBatch:
        """A trace's task and steps from all of its records (run by the store, in
        the transaction that wrote the records)."""
        return assemble_rows(task_id, records, self.redactor, self.prices)

    def write(self, prepared: PreparedBatch) -> IngestResult:
        if self.writer is not None:
            written = self.writer.submit(prepared.rows).result()
        elif len(prepared.rows):
            written = self.store.write_batch(prepared.rows, assemble=self.assemble)
        else:
            written = WriteResult()
        return self.result(prepared, written)

    @staticmethod
    def result(prepared: PreparedBatch, written: WriteResult) -> IngestResult:
        return IngestResult(
            received=prepared.received,
            stored=written.stored,
            duplicates=written.duplicates,
            rejected=prepared.rejected,
            unpriced=prepared.unpriced,
        )

    def checked_result(self, prepared: PreparedBatch, written: WriteResult) -> IngestResult:
        """``result``, where an id the store held already with other content is
        that event's error (a conflict) rather than a duplicate: the first
        write stays, and the client is told its new content was not stored."""
        result = self.result(prepared, written)
        if written.duplicates:
            conflicts = find_conflicts(self.store, prepared)
            if conflicts:
                result.duplicates -= len(conflicts)
                result.rejected = sorted([*prepared.rejected, *conflicts], key=lambda e: e.index)
        return result

    def ingest_body(self, body: bytes) -> IngestResult:
        return self.write(self.prepare_body(body))

    def ingest(self, items: list[Any]) -> IngestResult:
        return self.write(self.prepare(items))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
