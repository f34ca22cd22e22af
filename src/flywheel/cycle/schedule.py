"""When the next cycle is due: on an interval, on a volume of new signal, or on
a degradation alert (``flywheel.deploy.drift``)."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from flywheel.deploy.drift import detect, open_alerts
from flywheel.store import Store
from flywheel.store import tables as t

__all__ = ["due"]


def _new_tasks(store: Store, workload: str) -> int:
    previous = store.latest_dataset(workload)
    c = t.tasks.c
    query = select(func.count()).select_from(t.tasks).where(c.workload == workload)
    if previous and previous["cutoff"]:
        query = query.where(c.ingested_at > previous["cutoff"])
    with store.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _unfinished(store: Store, workload: str) -> bool:
    c = t.cycles.c
    query = select(func.count()).where(c.workload == workload, c.status == "running")
    with store.engine.connect() as conn:
        return bool(conn.execute(query).scalar_one())


def due(
    store: Store,
    workload: str,
    *,
    every_seconds: float,
    last_start: float,
    min_new_tasks: int = 0,
    on_degradation: bool = True,
    now: float | None = None,
) -> str | None:
    """The trigger of a cycle to start now, or None. ``last_start`` is a
    ``time.monotonic()`` reading (0: never started)."""
    now = time.monotonic() if now is None else now
    if _unfinished(store, workload):
        return "resume"  # a crashed cycle: pick it up as soon as its lock lease runs out
    if on_degradation:
        detect(store, workload)
        if open_alerts(store, workload):
            return "degradation"
    if min_new_tasks and _new_tasks(store, workload) >= min_new_tasks:
        return "volume"
    if every_seconds and (last_start == 0 or now - last_start >= every_seconds):
        return "schedule"
    return None
