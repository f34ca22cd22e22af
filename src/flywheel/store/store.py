"""The store: every write and read of records goes through ``Store``.

Writes are bulk and idempotent: rows carry client-generated ids and are
inserted with ``ON CONFLICT DO NOTHING`` (a task's outcome with a guarded
upsert), so a replayed batch is recognised and counted, never stored twice.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, Text, and_, case, cast, exists, func, or_, select, update
from sqlalchemy.exc import OperationalError

from flywheel.config import Settings
from flywheel.errors import InvalidInput, NotFound, StoreUnavailable
from flywheel.records import AuditEvent, Step, Task, new_id, utcnow
from flywheel.store import tables as t
from flywheel.store.bulk import finish_task_statement, insert_statement, replace_statement
from flywheel.store.curation import CurationQueries
from flywheel.store.engine import WRITE_OPTION, create_store_engine, upgrade_schema
from flywheel.store.eval_set import EvalSetQueries
from flywheel.store.seed import SeedQueries

__all__ = ["SCOPES", "ApiKey", "RowBatch", "Store", "TraceAssembler", "WriteResult"]

SCOPES = ("ingest", "review", "admin")


@dataclass
class RowBatch:
    """Rows ready for insertion, one list per table; built by ``flywheel.ingest``."""

    tasks_started: list[dict[str, Any]] = field(default_factory=list)
    tasks_finished: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    corrections: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    #: OpenTelemetry spans and log records; their traces are assembled on write
    otel_records: list[dict[str, Any]] = field(default_factory=list)
    #: an assembly that left something out: the trace's other stored steps are kept
    incomplete: bool = False

    def __len__(self) -> int:
        return sum(len(rows) for _, rows in self.parts())

    def parts(self) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        yield "tasks_started", self.tasks_started
        yield "tasks_finished", self.tasks_finished
        yield "steps", self.steps
        yield "feedback", self.feedback
        yield "corrections", self.corrections
        yield "annotations", self.annotations
        yield "otel_records", self.otel_records


@dataclass
class WriteResult:
    stored: int = 0
    duplicates: int = 0


@dataclass
class ApiKey:
    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


_INSERT_TABLES: dict[str, Table] = {
    "tasks_started": t.tasks,
    "steps": t.steps,
    "feedback": t.feedback,
    "corrections": t.corrections,
    "annotations": t.annotations,
    "otel_records": t.otel_records,
}

#: Builds the rows of a trace's task and steps from all of its OpenTelemetry records.
TraceAssembler = Callable[[str, list[dict[str, Any]]], RowBatch]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Store(CurationQueries, EvalSetQueries, SeedQueries):
    """A handle on one database. Thread-safe; open one per process and share it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # In this order: a task's outcome upserts over its start (or a stub).
        self._statements = [
            (part, insert_statement(table, self.dialect)) for part, table in _INSERT_TABLES.items()
        ]
        self._statements.insert(1, ("tasks_finished", finish_task_statement(t.tasks, self.dialect)))
        self._replace_task = replace_statement(t.tasks, self.dialect)
        self._replace_step = replace_statement(t.steps, self.dialect)

    @classmethod
    def open(cls, settings: Settings | None = None, *, url: str | None = None) -> Store:
        settings = settings or Settings()
        engine = create_store_engine(
            url or settings.database_url, sqlite_synchronous=settings.sqlite_synchronous
        )
        store = cls(engine)
        if settings.auto_migrate:
            store.upgrade()
        return store

    def upgrade(self) -> None:
        try:
            upgrade_schema(self.engine)
        except OperationalError as exc:
            raise StoreUnavailable(
                f"cannot reach the database at {self.engine.url.render_as_string()}: {exc.orig}",
                hint="check FLYWHEEL_DATABASE_URL and that the database server is running",
            ) from exc

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn = conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield conn

    # ------------------------------------------------------------- writes

    def write_batches(
        self, batches: Sequence[RowBatch], *, assemble: TraceAssembler | None = None
    ) -> list[WriteResult]:
        """Insert several batches in one transaction; one result per batch.

        When this returns, every row is committed. An id seen twice (in the
        store already, or earlier in these batches) counts as a duplicate.
        With ``assemble``, the task and steps of every trace that received
        OpenTelemetry records are rebuilt from all of the trace's records, in
        the same transaction.
        """
        results = [WriteResult() for _ in batches]
        with self._writing() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                new_records = False
                for part, statement in self._statements:
                    for batch, result in zip(batches, results, strict=True):
                        rows = getattr(batch, part)
                        if rows:
                            cursor.executemany(statement.sql, statement.params(rows))
                            stored = max(cursor.rowcount, 0)
                            result.stored += stored
                            result.duplicates += len(rows) - stored
                            new_records = new_records or (part == "otel_records" and stored > 0)
                # A re-sent export adds nothing: its traces are as assembled already.
                traces = sorted({r["task_id"] for batch in batches for r in batch.otel_records})
                if traces and new_records and assemble is not None:
                    self._assemble_traces(conn, cursor, traces, assemble)
            finally:
                cursor.close()
        return results

    def write_batch(self, batch: RowBatch, *, assemble: TraceAssembler | None = None) -> WriteResult:
        return self.write_batches([batch], assemble=assemble)[0]

    def write_labels(self, batch: RowBatch, then: Callable[[Connection, WriteResult], None]) -> WriteResult:
        """Insert a batch of labels (feedback, corrections, annotations) and run ``then``
        (a review item's state, the audit event) in the same transaction: all or none."""
        result = WriteResult()
        with self._writing() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                for part, statement in self._statements:
                    rows = getattr(batch, part)
                    if not rows:
                        continue
                    if part not in ("feedback", "corrections", "annotations"):
                        raise InvalidInput(f"write_labels writes labels only, not {part}")
                    cursor.executemany(statement.sql, statement.params(rows))
                    stored = max(cursor.rowcount, 0)
                    result.stored += stored
                    result.duplicates += len(rows) - stored
            finally:
                cursor.close()
            then(conn, result)
        return result

    def _assemble_traces(
        self, conn: Connection, cursor: Any, traces: list[str], assemble: TraceAssembler
    ) -> None:
        """Rebuild the task and steps of ``traces`` from their stored records."""
        if self.dialect == "postgresql":
            # Two writers assembling one trace: the second waits, then reads what the
            # first committed (each statement sees the latest commits). Sorted: no deadlock.
            for task_id in traces:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", (task_id,))
        r = t.otel_records.c
        records: dict[str, list[dict[str, Any]]] = {task_id: [] for task_id in traces}
        for start in range(0, len(traces), 500):
            rows = conn.execute(
                select(r.task_id, r.kind, r.data, r.redactions)
                .where(r.task_id.in_(traces[start : start + 500]))
                .order_by(r.task_id, r.id)
            ).mappings()
            for row in rows:
                records[row["task_id"]].append(dict(row))
        for task_id in traces:
            assembled = assemble(task_id, records[task_id])
            tasks = assembled.tasks_started + assembled.tasks_finished
            if tasks:
                cursor.executemany(self._replace_task.sql, self._replace_task.params(tasks))
            if assembled.steps:
                cursor.executemany(self._replace_step.sql, self._replace_step.params(assembled.steps))
            if assembled.incomplete:
                continue
            # A span once read as a step may not be one any more (a model call found
            # to wrap another): the trace's steps are exactly the assembled ones.
            keep = {s["id"] for s in assembled.steps}
            held = conn.execute(select(t.steps.c.id).where(t.steps.c.task_id == task_id)).scalars()
            gone = [step_id for step_id in held if step_id not in keep]
            for start in range(0, len(gone), 500):
                conn.execute(t.steps.delete().where(t.steps.c.id.in_(gone[start : start + 500])))

    # -------------------------------------------------------------- tasks

    def get_task(self, task_id: str) -> Task:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.tasks).where(t.tasks.c.id == task_id)).mappings().first()
            if row is None:
                raise NotFound(f"task {task_id!r} not found")
            step_rows = conn.execute(
                select(t.steps)
                .where(t.steps.c.task_id == task_id)
                .order_by(t.steps.c.seq, t.steps.c.started_at, t.steps.c.id)
            ).mappings()
            steps = [_step(r) for r in step_rows]
            labels = {
                name: [
                    _label(r)
                    for r in conn.execute(
                        select(table).where(table.c.task_id == task_id).order_by(table.c.at)
                    ).mappings()
                ]
                for name, table in (
                    ("feedback", t.feedback),
                    ("corrections", t.corrections),
                    ("annotations", t.annotations),
                )
            }
        task = _task(row)
        task.steps = steps
        task.redactions += sum(s.redactions for s in steps)
        task.feedback = labels["feedback"]
        task.corrections = labels["corrections"]
        task.annotations = labels["annotations"]
        return task

    def task_exists(self, task_id: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(t.tasks.c.id).where(t.tasks.c.id == task_id)).first() is not None

    def list_tasks(
        self,
        *,
        workload: str | None = None,
        session_id: str | None = None,
        agent_version: str | None = None,
        success: bool | None = None,
        finished: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        rule: str | None = None,
        feedback: str | None = None,
        search: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Task], str | None]:
        """Newest first, ``limit`` at a time; returns the tasks and the next page's cursor.

        ``rule``: tasks a curation rule sent to review; ``feedback``: ``positive``,
        ``negative`` or ``none``; ``search``: a substring of the input or output."""
        if not 1 <= limit <= 1000:
            raise InvalidInput(f"limit must be between 1 and 1000, not {limit}")
        c = t.tasks.c
        query = select(t.tasks)
        conditions = []
        if workload is not None:
            conditions.append(c.workload == workload)
        if session_id is not None:
            conditions.append(c.session_id == session_id)
        if agent_version is not None:
            conditions.append(c.agent_version == agent_version)
        if success is not None:
            conditions.append(c.success.is_(success))
        if finished is not None:
            conditions.append(c.ended_at.is_not(None) if finished else c.ended_at.is_(None))
        if since is not None:
            conditions.append(c.started_at >= _in_utc(since))
        if until is not None:
            conditions.append(c.started_at < _in_utc(until))
        # Correlated EXISTS, not IN (subquery): walking the newest-first index and
        # probing each task's labels by index stays fast at 1M tasks; an IN list
        # would first read every matching label.
        if rule is not None:
            r = t.review_items.c
            conditions.append(exists().where(r.task_id == c.id, r.rule == rule))
        if feedback is not None:
            f = t.feedback.c
            reactions = {
                "positive": (f.thumbs == 1) | (f.rating >= 4),
                "negative": (f.thumbs == -1) | (f.rating <= 2) | f.retried | f.abandoned,
            }
            if feedback == "none":
                conditions.append(~exists().where(f.task_id == c.id))
            elif feedback in reactions:
                conditions.append(exists().where(f.task_id == c.id, reactions[feedback]))
            else:
                raise InvalidInput(f"feedback must be positive, negative or none, not {feedback!r}")
        if search:
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            conditions.append(
                or_(
                    cast(c.input, Text).ilike(pattern, escape="\\"),
                    cast(c.output, Text).ilike(pattern, escape="\\"),
                )
            )
        if cursor:
            at, task_id = _decode_cursor(cursor)
            conditions.append(or_(c.started_at < at, and_(c.started_at == at, c.id < task_id)))
        query = query.where(*conditions).order_by(c.started_at.desc(), c.id.desc()).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = list(conn.execute(query).mappings())
        tasks = [_task(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = tasks[-1]
            next_cursor = f"{last.started_at.isoformat()}|{last.id}"
        return tasks, next_cursor

    def stats(self, workload: str | None = None) -> dict[str, Any]:
        """Counts per workload: tasks, outcomes, steps by kind, human signals."""
        c = t.tasks.c
        where = [c.workload == workload] if workload else []
        with self.engine.connect() as conn:
            per_workload = conn.execute(
                select(
                    c.workload,
                    func.count(),
                    func.count(c.ended_at),
                    func.sum(case((c.success.is_(True), 1), else_=0)),
                    func.sum(case((c.success.is_(False), 1), else_=0)),
                    func.avg(c.duration_ms),
                    func.count(func.distinct(c.session_id)),
                    func.max(c.started_at),
                )
                .where(*where)
                .group_by(c.workload)
                .order_by(c.workload)
            ).all()
            step_query = select(t.steps.c.kind, func.count()).group_by(t.steps.c.kind)
            label_counts = {}
            if workload:
                ids = select(c.id).where(c.workload == workload)
                step_query = step_query.where(t.steps.c.task_id.in_(ids))
            for name, table in (
                ("feedback", t.feedback),
                ("corrections", t.corrections),
                ("annotations", t.annotations),
            ):
                q = select(func.count()).select_from(table)
                if workload:
                    q = q.where(table.c.task_id.in_(select(c.id).where(c.workload == workload)))
                label_counts[name] = conn.execute(q).scalar_one()
            steps = {kind: n for kind, n in conn.execute(step_query)}
        workloads = []
        for name, n, finished, ok, failed, avg_ms, sessions, last in per_workload:
            workloads.append(
                {
                    "workload": name,
                    "tasks": n,
                    "finished": finished,
                    "succeeded": ok or 0,
                    "failed": failed or 0,
                    "success_rate": (ok or 0) / finished if finished else None,
                    "avg_duration_ms": float(avg_ms) if avg_ms is not None else None,
                    "sessions": sessions,
                    "last_task_at": _utc(last).isoformat() if last else None,
                }
            )
        return {
            "tasks": sum(w["tasks"] for w in workloads),
            "workloads": workloads,
            "steps": {kind: steps.get(kind, 0) for kind in sorted(steps)},
            **label_counts,
        }

    # --------------------------------------------------------------- keys

    def create_key(self, name: str, scopes: Iterable[str]) -> tuple[str, ApiKey]:
        """Create an API key; returns the secret (shown once) and its record."""
        scopes = sorted(set(scopes))
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise InvalidInput(f"scopes must be some of {list(SCOPES)}, got {scopes}")
        secret = "fw_" + secrets.token_urlsafe(32)
        record = ApiKey(
            id=new_id(),
            name=name,
            prefix=secret[:10],
            scopes=scopes,
            created_at=utcnow(),
            revoked_at=None,
        )
        with self._writing() as conn:
            conn.execute(
                t.api_keys.insert(),
                {**record.__dict__, "key_hash": hash_key(secret)},
            )
            self._audit(conn, "cli", "key.create", "api_key", record.id, {"scopes": scopes})
        return secret, record

    def list_keys(self) -> list[ApiKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.api_keys).order_by(t.api_keys.c.created_at)).mappings()
            return [_key(r) for r in rows]

    def revoke_key(self, key_id_or_prefix: str, *, actor: str = "cli") -> ApiKey:
        c = t.api_keys.c
        with self._writing() as conn:
            rows = (
                conn.execute(
                    select(t.api_keys).where(or_(c.id == key_id_or_prefix, c.prefix == key_id_or_prefix))
                )
                .mappings()
                .all()
            )
            if not rows:
                raise NotFound(f"no API key with id or prefix {key_id_or_prefix!r}")
            if len(rows) > 1:
                raise InvalidInput(f"{key_id_or_prefix!r} matches several keys; give the id")
            key = _key(rows[0])
            if key.revoked_at is None:
                key.revoked_at = utcnow()
                conn.execute(update(t.api_keys).where(c.id == key.id).values(revoked_at=key.revoked_at))
                self._audit(conn, actor, "key.revoke", "api_key", key.id, {})
        return key

    def get_key(self, key_id: str) -> ApiKey | None:
        """The active key with this id, or None."""
        c = t.api_keys.c
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(t.api_keys).where(c.id == key_id, c.revoked_at.is_(None)))
                .mappings()
                .first()
            )
        return _key(row) if row else None

    def find_key(self, secret: str) -> ApiKey | None:
        """The active key with this secret, or None."""
        c = t.api_keys.c
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(t.api_keys).where(c.key_hash == hash_key(secret), c.revoked_at.is_(None)))
                .mappings()
                .first()
            )
        return _key(row) if row else None

    def session_key(self, key_id: str, session_id: str) -> ApiKey | None:
        """The active key of a reviewer's session, or None when the key is revoked or
        the session was ended (logged out)."""
        c, r = t.api_keys.c, t.revoked_sessions.c
        ended = exists().where(r.id == hash_key(session_id))
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(t.api_keys).where(c.id == key_id, c.revoked_at.is_(None), ~ended))
                .mappings()
                .first()
            )
        return _key(row) if row else None

    def end_session(self, session_id: str, key_id: str, expires_at: datetime, *, actor: str) -> None:
        """Make a reviewer's session invalid before it expires (logout). Sessions that
        expired are forgotten here: their cookies are refused by their expiry."""
        now = utcnow()
        r = t.revoked_sessions.c
        with self._writing() as conn:
            conn.execute(t.revoked_sessions.delete().where(r.expires_at < now))
            from sqlalchemy.dialects import postgresql, sqlite

            insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
            conn.execute(
                insert(t.revoked_sessions).on_conflict_do_nothing(),
                {"id": hash_key(session_id), "key_id": key_id, "expires_at": expires_at, "ended_at": now},
            )
            self._audit(conn, actor, "ui.logout", "api_key", key_id, {})

    # -------------------------------------------------------------- audit

    def audit(
        self,
        actor: str,
        action: str,
        record_type: str,
        record_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        with self._writing() as conn:
            self._audit(conn, actor, action, record_type, record_id, details or {})

    def _audit(
        self,
        conn: Connection,
        actor: str,
        action: str,
        record_type: str,
        record_id: str | None,
        details: dict[str, Any],
    ) -> None:
        conn.execute(
            t.audit_events.insert(),
            {
                "id": new_id(),
                "at": utcnow(),
                "actor": actor,
                "action": action,
                "record_type": record_type,
                "record_id": record_id,
                "details": details,
            },
        )

    def audit_events(self, record_type: str | None = None, limit: int = 100) -> list[AuditEvent]:
        query = select(t.audit_events).order_by(t.audit_events.c.at.desc()).limit(limit)
        if record_type:
            query = query.where(t.audit_events.c.record_type == record_type)
        with self.engine.connect() as conn:
            return [AuditEvent(**r) for r in conn.execute(query).mappings()]


# ------------------------------------------------------------ row -> record


def _task(row: Any) -> Task:
    # Rows come from our own schema: construct without re-validating (1M tasks in curation).
    return Task.model_construct(
        id=row["id"],
        workload=row["workload"],
        session_id=row["session_id"],
        agent_version=row["agent_version"],
        input=row.get("input"),
        output=row.get("output"),
        success=row["success"],
        confidence=row["confidence"],
        error=row["error"],
        started_at=_utc(row["started_at"]),
        ended_at=_aware(row["ended_at"]),
        duration_ms=row["duration_ms"],
        metadata=row.get("metadata") or {},
        redactions=row["redactions"],
        steps=[],
        feedback=[],
        corrections=[],
        annotations=[],
    )


def _step(row: Any) -> Step:
    return Step(
        id=row["id"],
        task_id=row["task_id"],
        seq=row["seq"],
        kind=row["kind"],
        name=row["name"],
        started_at=_aware(row["started_at"]),
        ended_at=_aware(row["ended_at"]),
        latency_ms=row["latency_ms"],
        error=row["error"],
        data=row["data"],
        redactions=row["redactions"],
    )


def _label(row: Any) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in ("ingested_at",)}
    out["at"] = _aware(out["at"])
    return out


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=list(row["scopes"]),
        created_at=_utc(row["created_at"]),
        revoked_at=_aware(row["revoked_at"]),
    )


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time we store is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _in_utc(value: datetime) -> datetime:
    """A time to compare with stored ones, in UTC: SQLite stores times as UTC text
    without an offset, so a bound like 10:00+05:00 must become 05:00 first (a
    naive bound is taken as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, task_id = cursor.split("|", 1)
        return _in_utc(datetime.fromisoformat(at)), task_id
    except ValueError as exc:
        raise InvalidInput(f"cursor {cursor!r} is not one this server handed out") from exc
