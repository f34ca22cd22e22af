"""Small builders of valid events, and a database reset, shared by tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flywheel.records import new_id


def truncate_tables(url: str) -> None:
    """Empty every table of our schema in the database at ``url`` (PostgreSQL)."""
    from sqlalchemy import create_engine, inspect, text

    from flywheel.store.tables import metadata

    engine = create_engine(url)
    with engine.begin() as conn:
        existing = set(inspect(conn).get_table_names())
        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables if t.name in existing)
        if names:
            conn.execute(text(f"TRUNCATE {names}"))
    engine.dispose()


def now() -> str:
    return datetime.now(UTC).isoformat()


def task_events(
    workload: str = "w", session: str = "s1", *, steps: int = 2, success: bool = True
) -> list[dict[str, Any]]:
    task_id = new_id()
    at = now()
    events: list[dict[str, Any]] = [
        {
            "type": "task_started",
            "id": task_id,
            "workload": workload,
            "session_id": session,
            "input": "question",
            "started_at": at,
        }
    ]
    for i in range(steps):
        events.append(
            {
                "type": "tool_call",
                "id": new_id(),
                "task_id": task_id,
                "seq": i + 1,
                "name": "lookup",
                "arguments": {"i": i},
                "output": "row",
                "started_at": at,
                "ended_at": at,
            }
        )
    events.append(
        {
            "type": "task_finished",
            "id": task_id,
            "workload": workload,
            "session_id": session,
            "input": "question",
            "started_at": at,
            "ended_at": at,
            "output": "answer",
            "success": success,
            "confidence": 0.9,
        }
    )
    return events
