"""Store queries of a workload's standing evaluation set (``flywheel.curate.eval_set``):
its items, their staleness and retirement, and its versions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from flywheel.errors import NotFound
from flywheel.records import new_id
from flywheel.store import tables as t

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["EvalSetQueries"]


class EvalSetQueries:
    engine: Engine

    def eval_set_items(self, workload: str, *, active_only: bool = True) -> list[dict[str, Any]]:
        """The set's items, oldest first; ``active_only``: not retired (stale ones included,
        with their ``stale`` reason)."""
        c = t.eval_set_items.c
        query = select(t.eval_set_items).where(c.workload == workload).order_by(c.added_at, c.id)
        if active_only:
            query = query.where(c.retired_at.is_(None))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def eval_set_questions(self, workload: str) -> set[int]:
        """The question hashes the set holds (retired items too: once measured on, a
        question never trains)."""
        c = t.eval_set_items.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(c.question).where(c.workload == workload).distinct())
            return {int(r[0]) for r in rows}

    def label_sources(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Per task: whether a human reviewed it (a review item decided), the sources
        of its feedback, and its intent (metadata ``intent`` or ``category``)."""
        out: dict[str, dict[str, Any]] = {i: {"reviewed": False, "feedback_sources": []} for i in task_ids}
        ids = list(out)
        r, f, k = t.review_items.c, t.feedback.c, t.tasks.c
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                for task_id, state in conn.execute(select(r.task_id, r.state).where(r.task_id.in_(chunk))):
                    out[task_id]["reviewed"] = state in ("approved", "corrected")
                for task_id, source in conn.execute(select(f.task_id, f.source).where(f.task_id.in_(chunk))):
                    out[task_id]["feedback_sources"].append(source)
                for task_id, metadata in conn.execute(select(k.id, k.metadata).where(k.id.in_(chunk))):
                    if isinstance(metadata, dict):
                        out[task_id]["intent"] = metadata.get("intent") or metadata.get("category")
        return out

    def latest_eval_set(self, workload: str) -> dict[str, Any] | None:
        c = t.eval_set_versions.c
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(t.eval_set_versions)
                    .where(c.workload == workload)
                    .order_by(c.number.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def list_eval_sets(self, workload: str) -> list[dict[str, Any]]:
        c = t.eval_set_versions.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.eval_set_versions).where(c.workload == workload).order_by(c.number)
            ).mappings()
            return [dict(r) for r in rows]

    def save_eval_set(
        self,
        workload: str,
        *,
        added: Sequence[dict[str, Any]],
        retire: Sequence[str],
        stale: dict[str, str | None],
        dataset_id: str | None,
        summary: dict[str, Any],
        now: datetime,
    ) -> dict[str, Any]:
        """Add items, retire others, set staleness, and record the set's next version,
        in one transaction. ``stale`` maps an item id to its reason (None: fresh again)."""
        items, versions = t.eval_set_items.c, t.eval_set_versions.c
        with self.engine.begin() as conn:
            number = (
                conn.execute(select(func.max(versions.number)).where(versions.workload == workload)).scalar()
                or 0
            ) + 1
            if added:
                conn.execute(t.eval_set_items.insert(), [{**row, "added_version": number} for row in added])
            for start in range(0, len(retire), 500):
                conn.execute(
                    update(t.eval_set_items)
                    .where(items.id.in_(retire[start : start + 500]), items.retired_at.is_(None))
                    .values(retired_at=now)
                )
            for item_id, reason in stale.items():
                conn.execute(update(t.eval_set_items).where(items.id == item_id).values(stale=reason))
            active = conn.execute(
                select(func.count()).where(items.workload == workload, items.retired_at.is_(None))
            ).scalar_one()
            version = {
                "id": new_id(),
                "workload": workload,
                "number": number,
                "items": int(active),
                "added": len(added),
                "retired": len(retire),
                "dataset_id": dataset_id,
                "summary": summary,
                "created_at": now,
            }
            conn.execute(t.eval_set_versions.insert(), version)
        return version

    def validate_eval_item(
        self, item_id: str, *, tools_fingerprint: str | None, now: datetime
    ) -> dict[str, Any]:
        """A human re-confirmed the item's label: it is fresh again, for its tools as they are now."""
        c = t.eval_set_items.c
        with self.engine.begin() as conn:
            done = conn.execute(
                update(t.eval_set_items)
                .where(c.id == item_id)
                .values(stale=None, validated_at=now, tools_fingerprint=tools_fingerprint)
            )
            if not done.rowcount:
                raise NotFound(f"no evaluation set item {item_id!r}")
            row = conn.execute(select(t.eval_set_items).where(c.id == item_id)).mappings().one()
        return dict(row)
