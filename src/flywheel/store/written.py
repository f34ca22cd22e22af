"""Rows of a written batch as the store holds them, read back by id.

Ingestion compares an event whose id was stored before with what is stored
(``flywheel.ingest.conflicts``): the same content is a retry, other content a
conflict. Times come back aware, in UTC, on both databases.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, select

from flywheel.store import tables as t
from flywheel.store.store import Store

__all__ = ["stored_rows"]

_TABLES: dict[str, Table] = {
    "tasks_started": t.tasks,
    "tasks_finished": t.tasks,
    "steps": t.steps,
    "feedback": t.feedback,
    "corrections": t.corrections,
    "annotations": t.annotations,
}


def stored_rows(
    store: Store, part: str, ids: Sequence[str], columns: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The ``columns`` of the rows of ``part`` (a ``RowBatch`` part) with these ids."""
    table = _TABLES[part]
    selected = [table.c.id, *(table.c[name] for name in columns)]
    unique = sorted(set(ids))
    found: dict[str, dict[str, Any]] = {}
    with store.engine.connect() as conn:
        for start in range(0, len(unique), 500):
            query = select(*selected).where(table.c.id.in_(unique[start : start + 500]))
            for row in conn.execute(query).mappings():
                found[row["id"]] = {name: _utc(row[name]) for name in columns}
    return found


def _utc(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value
