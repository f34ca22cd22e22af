"""Ingestion owns the way in: decoding events and OTLP spans, validation,
redaction, and bulk, idempotent, group-committed writes to the store.

``Ingestor`` is the one entry point: the server, the SDK's local mode and the
``flywheel import`` command all go through it, so every path validates and
redacts the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flywheel.config import Settings
from flywheel.ingest.events import EventError, PreparedBatch, prepare_body, prepare_events
from flywheel.ingest.redact import Redactor
from flywheel.ingest.writer import BulkWriter
from flywheel.store import Store, WriteResult

__all__ = ["BulkWriter", "EventError", "IngestResult", "Ingestor", "PreparedBatch", "Redactor"]


@dataclass
class IngestResult:
    """What happened to a batch: how many were stored, already known, or refused."""

    received: int
    stored: int
    duplicates: int
    rejected: list[EventError] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "accepted": self.stored + self.duplicates,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": [e.as_dict() for e in self.rejected],
        }


class Ingestor:
    def __init__(self, store: Store, settings: Settings, *, group_commit: bool = False) -> None:
        self.store = store
        self.settings = settings
        self.redactor = Redactor(
            settings.redact, settings.redact_patterns, max_chars=settings.max_field_chars
        )
        self.writer = BulkWriter(store) if group_commit else None

    def prepare_body(self, body: bytes) -> PreparedBatch:
        return prepare_body(body, self.redactor, max_events=self.settings.max_batch_events)

    def prepare(self, items: list[Any]) -> PreparedBatch:
        return prepare_events(items, self.redactor)

    def write(self, prepared: PreparedBatch) -> IngestResult:
        if self.writer is not None:
            written = self.writer.submit(prepared.rows).result()
        elif len(prepared.rows):
            written = self.store.write_batch(prepared.rows)
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
        )

    def ingest_body(self, body: bytes) -> IngestResult:
        return self.write(self.prepare_body(body))

    def ingest(self, items: list[Any]) -> IngestResult:
        return self.write(self.prepare(items))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
