"""Degradation detection on a workload's live traffic: CUSUM change-point tests.

Since the last deployment change, the first ``reference`` tasks set the
normal rates; every later task is fed, in order, to one CUSUM per metric:
failure (the task did not succeed), negative feedback, tool error (a tool
call failed) and latency. For the three rates it is the Bernoulli CUSUM
(Reynolds & Stoumbos), the likelihood ratio of a rate ``shift`` higher than
normal against normal; for latency, a standardised CUSUM on log seconds. A
statistic crossing ``threshold`` is a change point: an alert is stored (one
per metric and deployment) and the scheduler can start a cycle. The false
alarm rate and the detection delay are measured by ``bench/drift.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from statistics import fmean, pstdev
from typing import Any

from sqlalchemy import and_, select

from flywheel.deploy.versions import deployment
from flywheel.records import new_id, utcnow
from flywheel.store import Store
from flywheel.store import tables as t

__all__ = ["DriftPolicy", "cusum_bernoulli", "cusum_normal", "detect", "open_alerts", "reference_rate"]


@dataclass
class DriftPolicy:
    reference: int = 500  # tasks that set the normal rates
    shift: float = 0.15  # the rate increase (absolute) the test is tuned to catch
    threshold: float = 10.0  # CUSUM decision limit: higher, fewer false alarms, later detection
    latency_shift: float = 1.0  # standard deviations of log latency
    latency_threshold: float = 8.0


def reference_rate(values: list[bool]) -> float:
    """The normal rate from the reference tasks, one standard error up: an estimate
    from a few hundred tasks is noisy, and a low one would raise false alarms."""
    p = fmean(values)
    return p + math.sqrt(max(p * (1 - p), 1e-4) / len(values))


def _cusum(increments: Iterable[float], threshold: float) -> tuple[int | None, int]:
    """(index of the first alarm or None, index where the statistic last left zero:
    the estimated change point)."""
    s, onset = 0.0, 0
    for i, step in enumerate(increments):
        if s == 0.0:
            onset = i
        s = max(0.0, s + step)
        if s > threshold:
            return i, onset
    return None, onset


def _bernoulli_steps(xs: list[bool], p0: float, shift: float) -> list[float]:
    p0 = min(max(p0, 0.01), 0.98)
    p1 = min(p0 + shift, 0.99)
    up, down = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    return [up if x else down for x in xs]


def cusum_bernoulli(xs: list[bool], p0: float, shift: float, threshold: float) -> int | None:
    """Index of the first alarm for an upward shift of the rate from ``p0``, or None."""
    return _cusum(_bernoulli_steps(xs, p0, shift), threshold)[0]


def cusum_normal(xs: list[float], mean: float, sd: float, shift: float, threshold: float) -> int | None:
    """Index of the first alarm for an upward shift of ``shift`` standard deviations."""
    sd = sd or 1e-9
    return _cusum(((x - mean) / sd - shift / 2 for x in xs), threshold)[0]


def _series(store: Store, workload: str, since: datetime | None) -> list[dict[str, Any]]:
    tc, fc, sc = t.tasks.c, t.feedback.c, t.steps.c
    negative = select(fc.task_id).where((fc.thumbs == -1) | (fc.rating <= 2) | fc.retried | fc.abandoned)
    tool_error = select(sc.task_id).where(and_(sc.kind == "tool_call", sc.error.is_not(None)))
    query = (
        select(
            tc.id,
            tc.started_at,
            tc.success,
            tc.duration_ms,
            tc.id.in_(negative).label("negative"),
            tc.id.in_(tool_error).label("tool_error"),
        )
        .where(tc.workload == workload, tc.ended_at.is_not(None))
        .order_by(tc.started_at, tc.id)
    )
    if since is not None:
        query = query.where(tc.started_at >= since)
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def detect(
    store: Store, workload: str, policy: DriftPolicy | None = None, *, record: bool = True
) -> list[dict[str, Any]]:
    """Change points in the workload's live metrics since its last deployment change."""
    policy = policy or DriftPolicy()
    current = deployment(store, workload)
    since = current["updated_at"] if current else None
    rows = _series(store, workload, since)
    if len(rows) <= policy.reference:
        return []
    ref, live = rows[: policy.reference], rows[policy.reference :]
    found = []
    for metric, value in (
        ("failure", lambda r: r["success"] is False),
        ("negative_feedback", lambda r: bool(r["negative"])),
        ("tool_error", lambda r: bool(r["tool_error"])),
    ):
        p0 = reference_rate([value(r) for r in ref])
        values = [value(r) for r in live]
        at, onset = _cusum(_bernoulli_steps(values, p0, policy.shift), policy.threshold)
        if at is not None:
            found.append(
                {
                    "metric": metric,
                    "reference_rate": p0,
                    "recent_rate": fmean(values[onset:]),  # since the estimated change point
                    "change_point_task_id": live[onset]["id"],
                    "task_id": live[at]["id"],
                    "at": live[at]["started_at"].isoformat(),
                    "tasks_after_reference": at + 1,
                }
            )
    seconds = [math.log(max(r["duration_ms"] or 0, 1.0)) for r in ref]
    mean, sd = fmean(seconds), max(pstdev(seconds), 0.05)  # a floor: constant latencies are not news
    logs = [math.log(max(r["duration_ms"] or 0, 1.0)) for r in live]
    at, onset = _cusum(((x - mean) / sd - policy.latency_shift / 2 for x in logs), policy.latency_threshold)
    if at is not None:
        found.append(
            {
                "metric": "latency",
                "reference_rate": math.exp(mean) / 1000,  # geometric mean seconds
                "recent_rate": math.exp(fmean(logs[onset:])) / 1000,
                "change_point_task_id": live[onset]["id"],
                "task_id": live[at]["id"],
                "at": live[at]["started_at"].isoformat(),
                "tasks_after_reference": at + 1,
            }
        )
    if record and found:
        _record(store, workload, since, found)
    return found


def _record(store: Store, workload: str, since: datetime | None, found: list[dict[str, Any]]) -> None:
    c = t.alerts.c
    with store._writing() as conn:
        query = select(c.metric).where(c.workload == workload)
        if since is not None:
            query = query.where(c.detected_at >= since)
        known = set(conn.execute(query).scalars())
        for alert in found:
            if alert["metric"] in known:
                continue
            alert_id = new_id()
            conn.execute(
                t.alerts.insert(),
                {
                    "id": alert_id,
                    "workload": workload,
                    "metric": alert["metric"],
                    "details": alert,
                    "detected_at": utcnow(),
                    "cycle_id": None,
                },
            )
            store._audit(conn, "drift", "alert.degradation", "workload", workload, alert)


def open_alerts(store: Store, workload: str) -> list[dict[str, Any]]:
    """Alerts no cycle has answered yet."""
    c = t.alerts.c
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(t.alerts).where(c.workload == workload, c.cycle_id.is_(None)).order_by(c.detected_at)
        ).mappings()
        return [dict(r) for r in rows]
