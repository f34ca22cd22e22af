"""Store queries of the Curate stage: tasks in bulk with their details, dataset
versions, examples and their membership, review items."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import JSON, Boolean, DateTime, Text, case, cast, func, or_, select, tuple_

from flywheel.errors import NotFound
from flywheel.records import CurationTask, Task
from flywheel.store import tables as t

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["CurationQueries", "tool_set_id"]


def _loads(text: str | None) -> Any:
    """JSON text extracted by the database; a value that is not JSON (a bare
    string SQLite's json_extract unquoted) is kept as it is."""
    if text is None or isinstance(text, int | float):
        return text  # SQLite's numeric affinity: a bare number comes back a number
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def tool_set_id(tools: Any) -> str:
    """The content address of a list of offered tools (the ``tool_sets`` row that
    examples offering it name, instead of each holding its own copy)."""
    blob = orjson.dumps(tools, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return "ts-" + hashlib.sha256(blob).hexdigest()[:32]


def _with_tools(conn: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Example rows with their ``tools`` (a tool set read and decoded once, shared
    by the rows that name it) in place of ``tools_id``."""
    wanted = sorted({r["tools_id"] for r in rows if r["tools_id"] is not None})
    sets: dict[str, Any] = {}
    c = t.tool_sets.c
    for start in range(0, len(wanted), 1000):
        query = select(c.id, c.tools).where(c.id.in_(wanted[start : start + 1000]))
        sets.update((key, tools) for key, tools in conn.execute(query))
    for row in rows:
        row["tools"] = sets.get(row.pop("tools_id"))
    return rows


def _time(value: Any) -> datetime | None:
    """A time as the DB-API hands it over: SQLite's text (naive UTC, in SQLAlchemy's
    format), PostgreSQL's datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        try:  # five times as fast as parsing it naive and replacing its tzinfo
            return datetime.fromisoformat(value + "+00:00")
        except ValueError:  # it had an offset already
            value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _raw_columns(columns: Sequence[Any]) -> list[Any]:
    """The columns to select for ``_decoder``: JSON as its text on every database."""
    return [cast(c, Text).label(c.name) if isinstance(c.type, JSON) else c for c in columns]


def _decoder(columns: Sequence[Any]) -> Any:
    """Rows of the DB-API (``_fetch``) made into dicts as SQLAlchemy would read them:
    JSON decoded, times aware, booleans bool. Skipping SQLAlchemy's row processing
    halves the cost of reading labels in bulk."""
    names = [c.name for c in columns]
    converters: list[Any] = []
    for column in columns:
        if isinstance(column.type, JSON):
            converters.append(_loads)
        elif isinstance(column.type, DateTime):
            converters.append(_time)
        elif isinstance(column.type, Boolean):
            converters.append(lambda v: None if v is None else bool(v))
        else:
            converters.append(None)
    plan = list(zip(names, converters, strict=True))
    return lambda row: {n: v if f is None else f(v) for (n, f), v in zip(plan, row, strict=True)}


def _fetch(conn: Any, query: Any) -> list[tuple[Any, ...]]:
    """A statement's rows straight from the DB-API cursor (values as the driver gives them)."""
    result = conn.execute(query)
    try:
        return result.cursor.fetchall()
    finally:
        result.close()


def _review_upsert(dialect: str, *, encoded_factors: bool = False) -> Any:
    """The insert of review items; a pending item of the same task is brought up to
    date (its task was curated again: new feedback, a correction), a decided one kept.
    ``encoded_factors``: the rows' ``factors`` are JSON text already."""
    from flywheel.store.bulk import BulkStatement, insert_statement

    plain = insert_statement(t.review_items, dialect, conflict=None)
    fresh = ("reason", "rule", "priority", "factors", "dataset_id", "updated_at")
    sql = (
        f'{plain.sql} ON CONFLICT ("id") DO UPDATE SET '
        + ", ".join(f'"{name}" = excluded."{name}"' for name in fresh)
        + " WHERE review_items.state = 'pending'"
    )
    encoders = list(plain.encoders)
    if encoded_factors:
        encoders[plain.columns.index("factors")] = None
    return BulkStatement(sql, plain.columns, encoders)


def _review_params(statement: Any, items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """``statement.params`` for review items, which carry every column (half a
    million of them at a million tasks: the values taken in one C call, and only
    the times encoded, once per distinct time)."""
    take = itemgetter(*statement.columns)
    encoders = [(i, e) for i, e in enumerate(statement.encoders) if e is not None]
    if not encoders:
        return [take(item) for item in items]
    done: dict[tuple[int, int], Any] = {}  # the rows keep their values alive: an id stands for one
    out = []
    for item in items:
        values = list(take(item))
        for i, encode in encoders:
            value = values[i]
            if value is not None:
                key = (i, id(value))
                encoded = done.get(key)
                if encoded is None:
                    encoded = done[key] = encode(value)
                values[i] = encoded
        out.append(tuple(values))
    return out


class CurationQueries:
    engine: Engine

    def _writing(self) -> Any: ...  # provided by Store

    def _curation_conditions(
        self, workload: str, ingested_after: datetime | None, ingested_until: datetime | None
    ) -> list[Any]:
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
        return conditions

    def _pages(
        self, conn: Any, columns: Sequence[Any], conditions: list[Any], chunk: int
    ) -> Iterator[tuple[list[Any], Any]]:
        """Rows of finished tasks, oldest ingest first, by keyset pages of ``chunk``;
        with each page, a subquery of its task ids (for the queries of its steps and
        labels: one small statement, where a list of ids would be thousands of
        parameters to bind)."""
        c = t.tasks.c
        last: tuple[datetime, str] | None = None
        while True:
            query = select(*columns, c.ingested_at).where(*conditions)
            if last is not None:  # keyset paging on the (ingested_at, id) index
                query = query.where(tuple_(c.ingested_at, c.id) > tuple_(last[0], last[1]))
            rows = conn.execute(query.order_by(c.ingested_at, c.id).limit(chunk)).all()
            if not rows:
                return
            first, last = (rows[0].ingested_at, rows[0].id), (rows[-1].ingested_at, rows[-1].id)
            ids = select(c.id).where(
                *conditions,
                tuple_(c.ingested_at, c.id) >= tuple_(first[0], first[1]),
                tuple_(c.ingested_at, c.id) <= tuple_(last[0], last[1]),
            )
            yield rows, ids

    @staticmethod
    def _attach_labels(conn: Any, tasks: dict[str, Any], ids: Any) -> None:
        for name, table in (
            ("feedback", t.feedback),
            ("corrections", t.corrections),
            ("annotations", t.annotations),
        ):
            columns = [c for c in table.c if c.name != "ingested_at"]
            decode = _decoder(columns)
            query = select(*_raw_columns(columns)).where(table.c.task_id.in_(ids)).order_by(table.c.at)
            grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for row in _fetch(conn, query):
                label = decode(row)
                grouped[label["task_id"]].append(label)
            for task_id, labels in grouped.items():
                setattr(tasks[task_id], name, labels)

    def iter_tasks_detailed(
        self,
        workload: str,
        *,
        ingested_after: datetime | None = None,
        ingested_until: datetime | None = None,
        chunk: int = 2000,
    ) -> Iterator[list[Task]]:
        """Finished tasks of ``workload`` with all their steps and labels, oldest
        ingest first. A task counts as changed (and comes again) when a label
        arrived for it after ``ingested_after``."""
        from flywheel.store.store import _step, _task

        conditions = self._curation_conditions(workload, ingested_after, ingested_until)
        with self.engine.connect() as conn:
            for rows, ids in self._pages(conn, list(t.tasks.c), conditions, chunk):
                tasks = {r.id: _task(r._mapping) for r in rows}
                for row in conn.execute(
                    select(t.steps)
                    .where(t.steps.c.task_id.in_(ids))
                    .order_by(t.steps.c.task_id, t.steps.c.seq, t.steps.c.started_at)
                ).mappings():
                    tasks[row["task_id"]].steps.append(_step(row))
                self._attach_labels(conn, tasks, ids)
                yield list(tasks.values())

    def curation_chunks(
        self,
        workload: str,
        *,
        ingested_after: datetime | None = None,
        ingested_until: datetime | None = None,
        chunk: int = 5000,
    ) -> list[tuple[tuple[datetime, str], tuple[datetime, str] | None]]:
        """The tasks ``iter_curation_tasks`` reads, cut into ranges of about ``chunk``
        tasks, oldest ingest first: (first (ingested_at, id), the next range's first
        or None), numbered by the database in one pass over the index."""
        c = t.tasks.c
        conditions = self._curation_conditions(workload, ingested_after, ingested_until)
        numbered = (
            select(c.ingested_at, c.id, func.row_number().over(order_by=(c.ingested_at, c.id)).label("n"))
            .where(*conditions)
            .subquery()
        )
        with self.engine.connect() as conn:
            starts = conn.execute(
                select(numbered.c.ingested_at, numbered.c.id)
                .where((numbered.c.n - 1) % chunk == 0)
                .order_by(numbered.c.n)
            ).all()
        firsts = [(r.ingested_at, r.id) for r in starts]
        return [(first, firsts[i + 1] if i + 1 < len(firsts) else None) for i, first in enumerate(firsts)]

    def iter_curation_tasks(
        self,
        workload: str,
        *,
        ingested_after: datetime | None = None,
        ingested_until: datetime | None = None,
        chunk: int = 5000,
    ) -> Iterator[list[CurationTask]]:
        """The same tasks as ``iter_tasks_detailed``, loaded for curation (see
        ``curation_tasks``), chunk by chunk."""
        for first, following in self.curation_chunks(
            workload, ingested_after=ingested_after, ingested_until=ingested_until, chunk=chunk
        ):
            yield self.curation_tasks(
                workload, first, following, ingested_after=ingested_after, ingested_until=ingested_until
            )

    def curation_tasks(
        self,
        workload: str,
        first: tuple[datetime, str],
        following: tuple[datetime, str] | None,
        *,
        ingested_after: datetime | None = None,
        ingested_until: datetime | None = None,
    ) -> list[CurationTask]:
        """The tasks of one range of ``curation_chunks``, as curation reads them:
        each task's last model call (its messages, tools and response; the JSON of
        a tool list seen before is decoded once), a tool-call summary aggregated
        in SQL (errors, later attempts, fallback used), and the labels."""
        c, s = t.tasks.c, t.steps.c
        range_end = None if following is None else _time(following[0])
        cutoff = _time(ingested_until)
        if range_end is not None and cutoff is not None and range_end <= cutoff:
            # Implied by the range's end (a task ingested by then); and a bound SQLite
            # would otherwise serve from the ingested_at index, reading every task
            # from the range to the cutoff once per query (seconds per chunk at 1M).
            ingested_until = None
        conditions = self._curation_conditions(workload, ingested_after, ingested_until)
        conditions.append(tuple_(c.ingested_at, c.id) >= tuple_(first[0], first[1]))
        if following is not None:
            conditions.append(tuple_(c.ingested_at, c.id) < tuple_(following[0], following[1]))
        # the range's task ids, as a subquery: one small statement where a list of
        # ids would be thousands of parameters to bind
        ids = select(c.id).where(*conditions)
        # An expression, not the bare column: SQLite would otherwise pick the kind index
        # and scan every step of that kind for each chunk, instead of the task_id index.
        by_kind = s.kind.concat("")
        tasks: dict[str, CurationTask] = {}
        # Rows straight from the DB-API (``_fetch``): at a million tasks, SQLAlchemy's
        # row processing cost as much as the queries.
        with self.engine.connect() as conn:
            metadata = c["metadata"]
            intent = func.coalesce(metadata["intent"].as_string(), metadata["category"].as_string())
            rows = _fetch(conn, select(
                c.id, c.workload, c.session_id, c.success, c.confidence, c.started_at, c.ended_at,
                c.duration_ms, cast(c.output, Text), intent,
            ).where(*conditions).order_by(c.ingested_at, c.id))  # fmt: skip
            for id_, workload_, session, success, confidence, started, ended, duration, output, aim in rows:
                tasks[id_] = CurationTask(
                    id_, workload_, session, None if success is None else bool(success), confidence,
                    _time(started), _time(ended), duration, None, output_json=output,  # type: ignore[arg-type]
                    intent=None if aim is None else str(aim)[:150],
                )  # fmt: skip
            summary = select(
                s.task_id,
                func.count(s.error),
                func.sum(case((s.data["attempt"].as_integer() > 1, 1), else_=0)),
                func.max(case((s.data["fallback"].as_boolean(), 1), else_=0)),
            ).where(s.task_id.in_(ids), by_kind == "tool_call")
            for task_id, errors, retries, fallback in _fetch(conn, summary.group_by(s.task_id)):
                task = tasks[task_id]
                task.tool_errors, task.retries = int(errors or 0), int(retries or 0)
                task.fallback = bool(fallback)
            calls = select(
                s.task_id,
                s.seq,
                s.data["messages"].as_string(),
                s.data["tools"].as_string(),
                s.data["response"].as_string(),
            ).where(s.task_id.in_(ids), by_kind == "llm_call")
            last: dict[str, tuple[int, Any, Any, Any]] = {}
            for task_id, seq, messages, tools, response in _fetch(conn, calls):
                if task_id not in last or seq >= last[task_id][0]:
                    last[task_id] = (seq, messages, tools, response)
            tool_lists: dict[str, Any] = {}
            for task_id, (_, messages, tools, response) in last.items():
                if tools is not None and tools not in tool_lists:
                    tool_lists[tools] = _loads(tools)
                tasks[task_id].last_call = {
                    "messages": _loads(messages),
                    "tools": tool_lists[tools] if tools is not None else None,
                    "response": _loads(response),
                }
            self._attach_labels(conn, tasks, ids)
        return list(tasks.values())

    def latency_percentiles(self, workload: str) -> dict[str, float]:
        """p50/p90/p95/p99 task duration (ms) of a workload, for the ``slow`` signal."""
        c = t.tasks.c
        with self.engine.connect() as conn:
            query = select(c.duration_ms).where(c.workload == workload, c.duration_ms.is_not(None))
            values = sorted(v for (v,) in _fetch(conn, query))
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
            return _with_tools(conn, [dict(r) for r in conn.execute(query).mappings()])

    def examples_by_id(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 1000):
                rows = conn.execute(select(t.examples).where(t.examples.c.id.in_(ids[i : i + 1000])))
                for row in _with_tools(conn, [dict(r) for r in rows.mappings()]):
                    out[row["id"]] = row
        return out

    def encode_examples(self, rows: Sequence[dict[str, Any]]) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
        """Example rows (with their ``tools``) as the parameters of their insert
        (JSON and times encoded for this database), and the tool sets they name
        (id -> tools): what ``save_dataset`` writes, made ahead of time."""
        from flywheel.store.bulk import insert_statement

        named: dict[int, tuple[Any, str]] = {}  # id(tools) -> (tools, its id): a shared list is hashed once
        tool_sets: dict[str, Any] = {}
        params = []
        for row in rows:
            tools = row.get("tools")
            tools_id = None
            if tools:
                known = named.get(id(tools))
                if known is None:
                    # held with the list, so that its id() stays its own during the call
                    known = named[id(tools)] = (tools, tool_set_id(tools))
                    tool_sets[known[1]] = tools
                tools_id = known[1]
            params.append({**row, "tools_id": tools_id})
        return insert_statement(t.examples, self.engine.dialect.name).params(params), tool_sets

    def save_dataset(
        self,
        dataset: dict[str, Any],
        membership: Sequence[dict[str, Any]],
        review_items: Iterable[dict[str, Any]],
        examples: Iterable[list[tuple[Any, ...]]] = (),
        tool_sets: dict[str, Any] | None = None,
    ) -> None:
        """Write a dataset version with its examples (batches of ``encode_examples``;
        an example already in the store is left as it is: examples are
        content-addressed) and the tool sets they name (``tool_sets``: those of
        ``encode_examples``), its membership and review items (their ``factors`` as
        JSON text), atomically. A task's review item still pending takes its new
        priority, reason and factors."""
        from flywheel.store.bulk import insert_statement

        with self._writing() as conn:
            conn.execute(t.datasets.insert(), dataset)
            cursor = conn.connection.dbapi_connection.cursor()
            try:
                rows = insert_statement(t.examples, conn.dialect.name)
                named = rows.columns.index("tools_id")
                used: set[str] = set()
                for batch in examples:
                    if batch:
                        cursor.executemany(rows.sql, batch)
                        used.update(row[named] for row in batch if row[named] is not None)
                missing = used - set(tool_sets or {})
                if missing:
                    raise ValueError(f"examples name tool sets that were not given: {sorted(missing)[:3]}")
                if used:
                    sets = insert_statement(t.tool_sets, conn.dialect.name)
                    given = tool_sets or {}
                    made = dataset["created_at"]
                    new = [{"id": i, "tools": given[i], "created_at": made} for i in sorted(used)]
                    cursor.executemany(sets.sql, sets.params(new))
                statement = _review_upsert(conn.dialect.name, encoded_factors=True)
                items: list[dict[str, Any]] = []
                for item in review_items:
                    items.append(item)
                    if len(items) == 10_000:
                        cursor.executemany(statement.sql, _review_params(statement, items))
                        items = []
                if items:
                    cursor.executemany(statement.sql, _review_params(statement, items))
                members = insert_statement(t.dataset_examples, conn.dialect.name, conflict=None)
                for i in range(0, len(membership), 50_000):
                    cursor.executemany(members.sql, members.params(membership[i : i + 50_000]))
            finally:
                cursor.close()

    # ----------------------------------------------------------- review queue

    def review_queue(
        self,
        workload: str | None = None,
        state: str = "pending",
        limit: int = 50,
        *,
        cycle_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Review items in ``state``, highest priority first; ``cycle_id``: only the
        items that cycle's review budget chose."""
        c = t.review_items.c
        query = (
            select(t.review_items)
            .where(c.state == state)
            .order_by(c.priority.desc(), c.created_at, c.id)
            .limit(limit)
        )
        if workload:
            query = query.where(c.workload == workload)
        if cycle_id:
            query = query.where(c.cycle_id == cycle_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def iter_pending_review_factors(
        self, workload: str, chunk: int = 20_000
    ) -> Iterator[list[tuple[str, str, float, str, Any]]]:
        """The workload's pending review items as (id, rule, priority, reason,
        factors), ``chunk`` at a time, read in one pass (streamed on PostgreSQL)."""
        c = t.review_items.c
        query = select(c.id, c.rule, c.priority, c.reason, cast(c.factors, Text)).where(
            c.workload == workload, c.state == "pending"
        )
        loads = orjson.loads
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=chunk).execute(query)
            for rows in result.partitions():
                yield [(i, r, p, why, None if f is None else loads(f)) for i, r, p, why, f in rows]

    def set_review_priorities(self, changes: Sequence[tuple[str, float, str]]) -> None:
        """(item id, priority, reason) of pending items ranked again."""
        from sqlalchemy import bindparam, update

        c = t.review_items.c
        statement = (
            update(t.review_items)
            .where(c.id == bindparam("item"), c.state == "pending")
            .values(priority=bindparam("new_priority"), reason=bindparam("new_reason"))
        )
        with self._writing() as conn:
            for start in range(0, len(changes), 10_000):
                conn.execute(
                    statement,
                    [
                        {"item": i, "new_priority": p, "new_reason": r}
                        for i, p, r in changes[start : start + 10_000]
                    ],
                )

    def review_items_of_tasks(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """task id -> its review item, for the tasks that have one."""
        c = t.review_items.c
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(task_ids), 500):
                query = select(t.review_items).where(c.task_id.in_(task_ids[start : start + 500]))
                out.update((r["task_id"], dict(r)) for r in conn.execute(query).mappings())
        return out

    def save_review_items(self, items: Sequence[dict[str, Any]]) -> None:
        """Add review items (whole rows); a task's pending item is brought up to date."""
        if not items:
            return
        with self._writing() as conn:
            statement = _review_upsert(conn.dialect.name)
            cursor = conn.connection.dbapi_connection.cursor()
            try:
                cursor.executemany(statement.sql, statement.params(items))
            finally:
                cursor.close()

    def set_review_factors(self, changes: Sequence[tuple[str, float, str, dict[str, Any]]]) -> None:
        """(item id, priority, reason, factors) of pending items."""
        c = t.review_items.c
        with self._writing() as conn:
            for item_id, priority, reason, factors in changes:
                conn.execute(
                    t.review_items.update()
                    .where(c.id == item_id, c.state == "pending")
                    .values(priority=priority, reason=reason, factors=factors)
                )

    def mark_review_batch(self, workload: str, cycle_id: str, budget: int) -> int:
        """Mark the ``budget`` highest-priority pending items of ``workload`` as the
        review batch of ``cycle_id`` (once: a cycle that has a batch keeps it);
        the number of items in its batch."""
        from sqlalchemy import update

        c = t.review_items.c
        with self._writing() as conn:
            chosen = conn.execute(select(func.count()).where(c.cycle_id == cycle_id)).scalar_one()
            if chosen or budget <= 0:
                return int(chosen)
            top = (
                select(c.id)
                .where(c.workload == workload, c.state == "pending")
                .order_by(c.priority.desc(), c.created_at, c.id)
                .limit(budget)
            )
            ids = [r[0] for r in conn.execute(top)]
            if ids:
                conn.execute(update(t.review_items).where(c.id.in_(ids)).values(cycle_id=cycle_id))
            return len(ids)

    def review_batch_counts(self, workload: str, cycle_id: str) -> dict[str, int]:
        """How many of the cycle's batch are in each state, and ``backlog``: the
        workload's other pending items."""
        c = t.review_items.c
        with self.engine.connect() as conn:
            states = conn.execute(
                select(c.state, func.count()).where(c.cycle_id == cycle_id).group_by(c.state)
            ).all()
            others = conn.execute(
                select(func.count()).where(
                    c.workload == workload,
                    c.state == "pending",
                    or_(c.cycle_id.is_(None), c.cycle_id != cycle_id),
                )
            ).scalar_one()
        return {**{state: int(n) for state, n in states}, "backlog": int(others)}
