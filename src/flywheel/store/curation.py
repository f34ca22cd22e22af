"""Store queries of the Curate stage: tasks in bulk with their details, dataset
versions, examples and their membership, review items."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, or_, select, tuple_

from flywheel.errors import NotFound
from flywheel.records import Task
from flywheel.store import tables as t

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["CurationQueries"]


class CurationQueries:
    engine: Engine

    def _writing(self) -> Any: ...  # provided by Store

    def iter_tasks_detailed(
        self,
        workload: str,
        *,
        ingested_after: datetime | None = None,
        ingested_until: datetime | None = None,
        chunk: int = 2000,
        lean: bool = False,
    ) -> Iterator[list[Task]]:
        """Finished tasks of ``workload`` with steps and labels, oldest ingest first.

        ``lean`` loads what curation needs and no more: the last model call's
        data, and a tool summary (errors, retries, fallback used) aggregated in
        SQL, left in ``task.metadata["_tools"]`` instead of the metadata.

        A task counts as changed (and comes again) when a label arrived for it
        after ``ingested_after``: curating incrementally sees new feedback too.
        """
        from flywheel.store.store import _label, _step, _task

        c = t.tasks.c
        conditions = [c.workload == workload, c.ended_at.is_not(None)]
        if ingested_until is not None:
            conditions.append(c.ingested_at <= ingested_until)
        if ingested_after is not None:
            touched = (
                select(t.feedback.c.task_id)
                .where(t.feedback.c.ingested_at > ingested_after)
                .union(
                    select(t.corrections.c.task_id).where(t.corrections.c.ingested_at > ingested_after),
                    select(t.annotations.c.task_id).where(t.annotations.c.ingested_at > ingested_after),
                )
            )
            conditions.append(or_(c.ingested_at > ingested_after, c.id.in_(touched)))
        last: tuple[datetime, str] | None = None
        with self.engine.connect() as conn:
            while True:
                columns = [
                    col for col in t.tasks.c if not (lean and col.name in ("input", "metadata", "output"))
                ]
                query = select(*columns).where(*conditions)
                if last is not None:  # keyset paging on the (workload, ingested_at, id) index
                    query = query.where(tuple_(c.ingested_at, c.id) > tuple_(last[0], last[1]))
                rows = list(conn.execute(query.order_by(c.ingested_at, c.id).limit(chunk)).mappings())
                if not rows:
                    return
                last = (rows[-1]["ingested_at"], rows[-1]["id"])
                tasks = {r["id"]: _task(r) for r in rows}
                ids = list(tasks)
                if lean:
                    summaries = self._lean_steps(conn, tasks)
                    for task_id, task in tasks.items():
                        task.metadata = {"_tools": summaries.get(task_id, (0, 0, False))}
                else:
                    for row in conn.execute(
                        select(t.steps)
                        .where(t.steps.c.task_id.in_(ids))
                        .order_by(t.steps.c.task_id, t.steps.c.seq, t.steps.c.started_at)
                    ).mappings():
                        tasks[row["task_id"]].steps.append(_step(row))
                for name, table in (
                    ("feedback", t.feedback),
                    ("corrections", t.corrections),
                    ("annotations", t.annotations),
                ):
                    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
                    for row in conn.execute(
                        select(table).where(table.c.task_id.in_(ids)).order_by(table.c.at)
                    ).mappings():
                        grouped[row["task_id"]].append(_label(row))
                    for task_id, labels in grouped.items():
                        setattr(tasks[task_id], name, labels)
                yield list(tasks.values())

    @staticmethod
    def _lean_steps(conn: Any, tasks: dict[str, Task]) -> dict[str, tuple[int, int, bool]]:
        """Attach each task's last model call; return its tool summary
        (errors, retries, fallback used), aggregated in SQL."""
        from datetime import UTC

        from flywheel.records import Step, StepKind

        s = t.steps.c
        ids = list(tasks)
        summary: dict[str, tuple[int, int, bool]] = {}
        # An expression, not the bare column: SQLite would otherwise pick the kind index
        # and scan every step of that kind for each chunk, instead of the task_id index.
        by_kind = s.kind.concat("")
        query = (
            select(
                s.task_id,
                func.count(s.error),
                func.sum(case((s.data["attempt"].as_integer() > 1, 1), else_=0)),
                func.max(case((s.data["fallback"].as_boolean(), 1), else_=0)),
            )
            .where(s.task_id.in_(ids), by_kind == "tool_call")
            .group_by(s.task_id)
        )
        for task_id, errors, retries, fallback in conn.execute(query):
            summary[task_id] = (int(errors or 0), int(retries or 0), bool(fallback))
        last: dict[str, tuple[int, Any]] = {}
        for step_id, task_id, seq, started, data in conn.execute(
            select(s.id, s.task_id, s.seq, s.started_at, s.data).where(
                s.task_id.in_(ids), by_kind == "llm_call"
            )
        ):
            if task_id not in last or seq >= last[task_id][0]:
                last[task_id] = (seq, (step_id, started, data))
        for task_id, (seq, (step_id, started, data)) in last.items():
            tasks[task_id].steps.append(
                Step.model_construct(
                    id=step_id,
                    task_id=task_id,
                    seq=seq,
                    kind=StepKind.LLM_CALL,
                    name=None,
                    error=None,
                    started_at=started if started.tzinfo else started.replace(tzinfo=UTC),
                    ended_at=None,
                    latency_ms=None,
                    data=data,
                    redactions=0,
                )
            )
        return summary

    def latency_percentiles(self, workload: str) -> dict[str, float]:
        """p50/p90/p95/p99 task duration (ms) of a workload, for the ``slow`` signal."""
        with self.engine.connect() as conn:
            values = sorted(
                v
                for v in conn.execute(
                    select(t.tasks.c.duration_ms).where(
                        t.tasks.c.workload == workload, t.tasks.c.duration_ms.is_not(None)
                    )
                ).scalars()
            )
        if not values:
            return {}
        pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
        return {"p50": pick(0.5), "p90": pick(0.9), "p95": pick(0.95), "p99": pick(0.99)}

    # -------------------------------------------------------------- datasets

    def latest_dataset(self, workload: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(t.datasets)
                    .where(t.datasets.c.workload == workload)
                    .order_by(t.datasets.c.number.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def get_dataset(self, id_or_ref: str) -> dict[str, Any]:
        """By id, or ``WORKLOAD@NUMBER``, or ``WORKLOAD`` (the latest)."""
        c = t.datasets.c
        query = select(t.datasets)
        if "@" in id_or_ref:
            workload, _, number = id_or_ref.rpartition("@")
            query = (
                query.where(c.workload == workload, c.number == int(number))
                if number.isdigit()
                else query.where(c.id == id_or_ref)
            )
        else:
            query = (
                query.where(or_(c.id == id_or_ref, c.workload == id_or_ref))
                .order_by(c.number.desc())
                .limit(1)
            )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            raise NotFound(f"no dataset {id_or_ref!r}", hint="list them with 'flywheel datasets list'")
        return dict(row)

    def list_datasets(self, workload: str | None = None) -> list[dict[str, Any]]:
        query = select(t.datasets).order_by(t.datasets.c.workload, t.datasets.c.number)
        if workload:
            query = query.where(t.datasets.c.workload == workload)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def dataset_membership(self, dataset_id: str) -> dict[str, tuple[str, float]]:
        """example id -> (split, weight)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    t.dataset_examples.c.example_id, t.dataset_examples.c.split, t.dataset_examples.c.weight
                ).where(t.dataset_examples.c.dataset_id == dataset_id)
            )
            return {r[0]: (r[1], r[2]) for r in rows}

    def dataset_examples(self, dataset_id: str, split: str | None = None) -> list[dict[str, Any]]:
        de = t.dataset_examples.c
        query = (
            select(t.examples, de.split, de.weight)
            .join(t.dataset_examples, de.example_id == t.examples.c.id)
            .where(de.dataset_id == dataset_id)
            .order_by(t.examples.c.task_at, t.examples.c.id)
        )
        if split:
            query = query.where(de.split == split)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def examples_by_id(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 1000):
                for row in conn.execute(
                    select(t.examples).where(t.examples.c.id.in_(ids[i : i + 1000]))
                ).mappings():
                    out[row["id"]] = dict(row)
        return out

    def save_dataset(
        self,
        dataset: dict[str, Any],
        examples: Sequence[dict[str, Any]],
        membership: Sequence[dict[str, Any]],
        review_items: Sequence[dict[str, Any]],
    ) -> None:
        """Write a dataset version with its new examples, membership and review items, atomically."""
        from flywheel.store.bulk import insert_statement

        with self._writing() as conn:
            conn.execute(t.datasets.insert(), dataset)
            cursor = conn.connection.dbapi_connection.cursor()
            try:
                for table, rows in ((t.examples, examples), (t.review_items, review_items)):
                    if rows:
                        statement = insert_statement(table, conn.dialect.name)
                        cursor.executemany(statement.sql, statement.params(rows))
            finally:
                cursor.close()
            if membership:
                conn.execute(t.dataset_examples.insert(), list(membership))

    # ----------------------------------------------------------- review queue

    def review_queue(
        self, workload: str | None = None, state: str = "pending", limit: int = 50
    ) -> list[dict[str, Any]]:
        c = t.review_items.c
        query = (
            select(t.review_items)
            .where(c.state == state)
            .order_by(c.priority.desc(), c.created_at)
            .limit(limit)
        )
        if workload:
            query = query.where(c.workload == workload)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]
