"""Store reads of what the loop recorded, for the dashboard and the reports:
the stored evaluations (each with the gate's whole decision) and a stage's
outputs across cycles, each in one query."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from flywheel.store import tables as t

if TYPE_CHECKING:
    from flywheel.store.store import Store

__all__ = ["evaluation_results", "stage_outputs", "workload_evaluations"]

_CHUNK = 500  # ids per IN (...): well under SQLite's and PostgreSQL's parameter limits


def evaluation_results(store: Store, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Evaluation id -> its stored result (the comparison and the gate's decision)."""
    wanted = sorted(set(ids))
    c = t.evaluations.c
    out: dict[str, dict[str, Any]] = {}
    with store.engine.connect() as conn:
        for start in range(0, len(wanted), _CHUNK):
            rows = conn.execute(select(c.id, c.result).where(c.id.in_(wanted[start : start + _CHUNK])))
            out.update({row.id: row.result or {} for row in rows})
    return out


def workload_evaluations(store: Store, workload: str) -> list[dict[str, Any]]:
    """The workload's evaluations, oldest first: id, baseline_id, candidate_id,
    dataset_id, created_at and result."""
    c = t.evaluations.c
    query = (
        select(c.id, c.baseline_id, c.candidate_id, c.dataset_id, c.created_at, c.result)
        .where(c.workload == workload)
        .order_by(c.created_at, c.id)
    )
    with store.engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def stage_outputs(store: Store, cycle_ids: Iterable[str], stage: str) -> dict[str, dict[str, Any]]:
    """Cycle id -> the outputs ``stage`` recorded (cycles whose stage has not run are absent)."""
    wanted = sorted(set(cycle_ids))
    c = t.cycle_stages.c
    out: dict[str, dict[str, Any]] = {}
    with store.engine.connect() as conn:
        for start in range(0, len(wanted), _CHUNK):
            rows = conn.execute(
                select(c.cycle_id, c.outputs).where(
                    c.cycle_id.in_(wanted[start : start + _CHUNK]), c.stage == stage
                )
            )
            out.update({row.cycle_id: row.outputs or {} for row in rows})
    return out
