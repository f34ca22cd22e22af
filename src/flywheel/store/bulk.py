"""Bulk, idempotent inserts through the DB-API's ``executemany``.

The hot path of ingestion: one prepared statement per table, parameters
encoded once (JSON by orjson, times in the format SQLAlchemy reads back), and
``ON CONFLICT DO NOTHING`` so that the row count says how many rows were new.
SQLite and psycopg both sum ``rowcount`` over an ``executemany``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import JSON, Boolean, DateTime, Table

__all__ = ["BulkStatement", "finish_task_statement", "insert_statement", "replace_statement"]

Encoder = Callable[[Any], Any]


def _json(value: Any) -> Any:
    return None if value is None else orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _sqlite_time(value: datetime | None) -> str | None:
    # SQLAlchemy's SQLite DateTime storage format ("2026-12-03 08:05:00.000000");
    # every time we store is UTC. isoformat is twice as fast as strftime, and an
    # aware time already in UTC needs no conversion (the offset is cut off).
    if value is None:
        return None
    zone = value.tzinfo
    if zone is not None and zone is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]


class BulkStatement:
    """An INSERT for one table and dialect, with the encoders of its columns."""

    def __init__(self, sql: str, columns: Sequence[str], encoders: Sequence[Encoder | None]) -> None:
        self.sql = sql
        self.columns = tuple(columns)
        self.encoders = tuple(encoders)

    def params(self, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
        columns = self.columns
        encoded = [(i, enc) for i, enc in enumerate(self.encoders) if enc is not None]
        # A value many rows share (a tool list, a run's timestamp) is encoded once: the
        # rows keep every value alive during the call, so an id stands for one value.
        # None stays None (every encoder maps it to NULL).
        shared: dict[tuple[int, int], Any] = {}
        out = []
        for row in rows:
            values = [row.get(c) for c in columns]
            for i, enc in encoded:
                value = values[i]
                if value is not None:
                    key = (i, id(value))
                    text = shared.get(key)
                    if text is None:
                        text = shared[key] = enc(value)
                    values[i] = text
            out.append(tuple(values))
        return out


def _columns(table: Table, dialect: str) -> tuple[list[str], list[Encoder | None], list[str]]:
    names: list[str] = []
    encoders: list[Encoder | None] = []
    marks: list[str] = []
    for column in table.columns:
        names.append(column.name)
        if isinstance(column.type, JSON):
            encoders.append(_json)
            marks.append("?" if dialect == "sqlite" else "%s::jsonb")
        elif isinstance(column.type, DateTime) and dialect == "sqlite":
            encoders.append(_sqlite_time)
            marks.append("?")
        elif isinstance(column.type, Boolean) and dialect == "sqlite":
            encoders.append(lambda v: None if v is None else int(v))
            marks.append("?")
        else:
            encoders.append(None)
            marks.append("?" if dialect == "sqlite" else "%s")
    return names, encoders, marks


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def insert_statement(table: Table, dialect: str, conflict: str | None = "id") -> BulkStatement:
    """``INSERT`` of every column; a row whose ``conflict`` column exists already is
    skipped (``None``: no such clause, a duplicate is an error)."""
    names, encoders, marks = _columns(table, dialect)
    sql = f'INSERT INTO "{table.name}" ({_quoted(names)}) VALUES ({", ".join(marks)})'
    if conflict is not None:
        sql += f' ON CONFLICT ("{conflict}") DO NOTHING'
    return BulkStatement(sql, names, encoders)


def finish_task_statement(table: Table, dialect: str) -> BulkStatement:
    """Upsert of a task's outcome: fills in a started (or stub) task, once.

    The outcome's identity wins over a stub made from a child span; input and
    version are kept when the outcome has none; a finished event repeats the
    input, so its redactions are counted once.
    """
    names, encoders, marks = _columns(table, dialect)
    t = f'"{table.name}"'
    sql = (
        f"INSERT INTO {t} ({_quoted(names)}) VALUES ({', '.join(marks)}) "
        f'ON CONFLICT ("id") DO UPDATE SET '
        "workload = excluded.workload, session_id = excluded.session_id, "
        "started_at = excluded.started_at, output = excluded.output, success = excluded.success, "
        "confidence = excluded.confidence, error = excluded.error, ended_at = excluded.ended_at, "
        "duration_ms = excluded.duration_ms, metadata = excluded.metadata, "
        f"input = COALESCE({t}.input, excluded.input), "
        f"agent_version = COALESCE({t}.agent_version, excluded.agent_version), "
        f"redactions = CASE WHEN excluded.input IS NULL THEN {t}.redactions + excluded.redactions "
        "ELSE excluded.redactions END "
        f"WHERE {t}.ended_at IS NULL"
    )
    return BulkStatement(sql, names, encoders)


def replace_statement(table: Table, dialect: str) -> BulkStatement:
    """Upsert that replaces every column but the id: for rows that are a function
    of other stored rows (a trace's task and steps, assembled from its
    OpenTelemetry records). ``ingested_at`` moves too, so that incremental
    curation, which reads what was ingested since its last cutoff, sees a task
    whose root or content arrived later."""
    names, encoders, marks = _columns(table, dialect)
    kept = {"id"}
    assignments = ", ".join(f'"{n}" = excluded."{n}"' for n in names if n not in kept)
    sql = (
        f'INSERT INTO "{table.name}" ({_quoted(names)}) VALUES ({", ".join(marks)}) '
        f'ON CONFLICT ("id") DO UPDATE SET {assignments}'
    )
    return BulkStatement(sql, names, encoders)
