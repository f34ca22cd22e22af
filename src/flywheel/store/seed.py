"""Store queries of the cold start (``flywheel.curate.seed``): the logged inputs a
seed samples from, which seeded tasks exist, and the seeded tasks' review items."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from flywheel.store import tables as t

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["SEED_PREFIX", "SeedQueries"]

#: The id of every seeded task starts with this (its rest is a hash of the input).
SEED_PREFIX = "seed-"


class SeedQueries:
    engine: Engine

    def _writing(self) -> Any: ...  # provided by Store

    def seed_candidates(self, workload: str, chunk: int = 5000) -> Iterator[list[tuple[str, Any, Any]]]:
        """The workload's finished tasks that are not seeded ones, as (task id, intent,
        the tools its last model call was offered as JSON text, or None), by pages of
        ``chunk`` in id order. The intent is the ``intent`` or ``category`` metadata."""
        c, s = t.tasks.c, t.steps.c
        intent = func.coalesce(c["metadata"]["intent"].as_string(), c["metadata"]["category"].as_string())
        last = ""
        with self.engine.connect() as conn:
            while True:
                rows = conn.execute(
                    select(c.id, intent)
                    .where(
                        c.workload == workload,
                        c.ended_at.is_not(None),
                        c.id > last,
                        ~c.id.startswith(SEED_PREFIX, autoescape=True),
                    )
                    .order_by(c.id)
                    .limit(chunk)
                ).all()
                if not rows:
                    return
                last = rows[-1][0]
                ids = [r[0] for r in rows]
                tools: dict[str, tuple[int, Any]] = {}
                calls = select(s.task_id, s.seq, s.data["tools"].as_string()).where(
                    s.task_id.in_(ids), s.kind == "llm_call"
                )
                for task_id, seq, offered in conn.execute(calls):
                    if task_id not in tools or seq >= tools[task_id][0]:
                        tools[task_id] = (seq, offered)
                yield [(i, aim, tools.get(i, (0, None))[1]) for i, aim in rows]

    def existing_task_ids(self, task_ids: Sequence[str]) -> set[str]:
        """Those of ``task_ids`` the store holds."""
        c = t.tasks.c
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(task_ids), 500):
                query = select(c.id).where(c.id.in_(task_ids[start : start + 500]))
                found.update(r[0] for r in conn.execute(query))
        return found

    def tasks_with_review_items(self, task_ids: Sequence[str]) -> set[str]:
        """Those of ``task_ids`` that have a review item (in any state)."""
        c = t.review_items.c
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(task_ids), 500):
                query = select(c.task_id).where(c.task_id.in_(task_ids[start : start + 500]))
                found.update(r[0] for r in conn.execute(query))
        return found

    def add_review_items(self, items: Sequence[dict[str, Any]]) -> int:
        """Insert review items (whole rows); a task that has an item already keeps
        it as it is (pending or decided). The number added."""
        if not items:
            return 0
        have = self.tasks_with_review_items([i["task_id"] for i in items])
        fresh = [i for i in items if i["task_id"] not in have]
        if not fresh:
            return 0
        columns = [column.name for column in t.review_items.c]
        with self._writing() as conn:
            before = conn.execute(select(func.count()).select_from(t.review_items)).scalar_one()
            for start in range(0, len(fresh), 1000):
                rows = [{name: item.get(name) for name in columns} for item in fresh[start : start + 1000]]
                conn.execute(_insert_ignoring_duplicates(conn.dialect.name), rows)
            after = conn.execute(select(func.count()).select_from(t.review_items)).scalar_one()
        return int(after - before)


def _insert_ignoring_duplicates(dialect: str) -> Any:
    """An INSERT of review items that skips a row whose id or task has one already."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(t.review_items).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(t.review_items).on_conflict_do_nothing()
