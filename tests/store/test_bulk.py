"""Bulk inserts (the DB-API path of ingestion and curation) store what
SQLAlchemy reads back as written: times in every offset, JSON, booleans."""

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import select

from flywheel.store import tables as t
from flywheel.store.bulk import insert_statement


def test_bulk_rows_read_back_as_written(store):
    base = datetime(2026, 12, 3, 8, 5, 0, 123456, tzinfo=UTC)
    times = [
        base,
        base.replace(microsecond=0),  # no fraction: still the full storage format
        base.astimezone(timezone(timedelta(hours=5, minutes=30))),  # stored as UTC
        base.astimezone(timezone(timedelta(hours=-8))),
    ]
    shared = {"name": "weather", "arguments": {"city": "Oslo"}}  # one object in many rows
    rows = [
        {"id": f"s{i}", "task_id": "t", "seq": i, "kind": "tool_call", "name": "weather", "started_at": at,
         "ended_at": None if i % 2 else at, "latency_ms": 1.5, "error": None, "data": shared,
         "redactions": 0, "ingested_at": at}
        for i, at in enumerate(times)
    ]  # fmt: skip
    statement = insert_statement(t.steps, store.engine.dialect.name)
    with store.engine.begin() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.executemany(statement.sql, statement.params(rows))
        cursor.close()
    with store.engine.connect() as conn:
        back = conn.execute(select(t.steps).order_by(t.steps.c.seq)).mappings().all()
    assert len(back) == len(rows)
    for row, stored in zip(rows, back, strict=True):
        for column in ("started_at", "ingested_at"):
            value = stored[column] if stored[column].tzinfo else stored[column].replace(tzinfo=UTC)
            assert value == row[column]
        assert stored["ended_at"] is None if row["ended_at"] is None else stored["ended_at"] is not None
        assert stored["data"] == shared and stored["latency_ms"] == 1.5
    # SQLite compares times as text: every stored time has the one fixed-width format
    if store.engine.dialect.name == "sqlite":
        with store.engine.connect() as conn:
            texts = [r[0] for r in conn.exec_driver_sql("SELECT started_at FROM steps ORDER BY seq")]
        assert texts == [
            "2026-12-03 08:05:00.123456", "2026-12-03 08:05:00.000000",
            "2026-12-03 08:05:00.123456", "2026-12-03 08:05:00.123456",
        ]  # fmt: skip
