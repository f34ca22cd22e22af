"""Flywheel velocity, computed from the store: how fast and how well the loop turns.

Per cycle: cycle time (whole and per stage) with the bottleneck stage named,
each stage's throughput, signal density (usable examples per 1,000 tasks),
the version-over-version change measured on held-out data (accuracy, which
is tool-call accuracy on this kind of workload, error rate, seconds and cost
per task, with the 95% CI), live cost per task and user satisfaction (share
of positive reactions) in the cycle's traffic window, and the review backlog
and throughput.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from statistics import median
from typing import Any

from sqlalchemy import case, func, select

from flywheel.store import Store
from flywheel.store import tables as t

__all__ = ["cycle_metrics", "review_metrics", "satisfaction"]


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def satisfaction(store: Store, workload: str, since: datetime | None, until: datetime) -> dict[str, Any]:
    """Positive share of the explicit reactions to tasks started in [since, until)."""
    tc, fc = t.tasks.c, t.feedback.c
    positive = (fc.thumbs == 1) | (fc.rating >= 4)
    negative = (fc.thumbs == -1) | (fc.rating <= 2) | fc.retried | fc.abandoned
    conditions = [tc.workload == workload, tc.started_at < until]
    if since is not None:
        conditions.append(tc.started_at >= since)
    query = (
        select(
            func.count(func.distinct(tc.id)),
            func.sum(case((positive, 1), else_=0)),
            func.sum(case((negative, 1), else_=0)),
            func.avg(tc.duration_ms),
            func.sum(case((tc.success.is_(True), 1), else_=0)),
        )
        .select_from(t.tasks.outerjoin(t.feedback, fc.task_id == tc.id))
        .where(*conditions)
    )
    with store.engine.connect() as conn:
        tasks, pos, neg, ms, ok = conn.execute(query).one()
    pos, neg = int(pos or 0), int(neg or 0)
    return {
        "tasks": int(tasks or 0),
        "positive": pos,
        "negative": neg,
        "satisfaction": pos / (pos + neg) if pos + neg else None,
        "seconds_per_task": float(ms) / 1000 if ms is not None else None,
    }


def review_metrics(store: Store, workload: str, *, now: datetime | None = None) -> dict[str, Any]:
    """Backlog, items reviewed per hour over the last day, median time to first review."""
    c = t.review_items.c
    now = now or datetime.now(UTC)
    with store.engine.connect() as conn:
        backlog = conn.execute(
            select(func.count()).where(c.workload == workload, c.state == "pending")
        ).scalar_one()
        done = conn.execute(
            select(c.created_at, c.updated_at).where(
                c.workload == workload, c.state != "pending", c.updated_at >= now - timedelta(days=1)
            )
        ).all()
    waits = [((_aware(u) or now) - (_aware(cr) or now)).total_seconds() for cr, u in done]
    return {
        "backlog": int(backlog),
        "reviewed_last_day": len(done),
        "items_per_hour": len(done) / 24,
        "median_seconds_to_review": median(waits) if waits else None,
    }


def cycle_metrics(store: Store, cycle_id: str) -> dict[str, Any]:
    from flywheel.cycle.runner import get_cycle

    cycle = get_cycle(store, cycle_id)
    stages = {s["stage"]: s for s in cycle["stages"]}
    seconds = {
        name: ((_aware(s["finished_at"]) or datetime.now(UTC)) - _aware(s["started_at"])).total_seconds()  # type: ignore[operator]
        for name, s in stages.items()
    }
    ends = [_aware(s["finished_at"]) for s in stages.values() if s["finished_at"]]
    started = _aware(cycle["started_at"])
    cycle_seconds = ((max(ends) if ends else datetime.now(UTC)) - started).total_seconds()  # type: ignore[operator,type-var]
    out: dict[str, dict[str, Any]] = {s: stages[s]["outputs"] for s in stages}

    curate = out.get("curate", {})
    evaluate = out.get("evaluate", {})
    throughput: dict[str, float | None] = {}
    if "curate" in seconds:
        throughput["curate_tasks_per_second"] = curate.get("tasks_processed", 0) / max(
            seconds["curate"], 1e-6
        )
    if evaluate.get("evaluations"):
        answered = evaluate["items"] * (1 + len(evaluate["evaluations"]))
        throughput["evaluate_items_per_second"] = answered / max(seconds.get("evaluate", 0), 1e-6)
    if out.get("watch", {}).get("canary_tasks"):
        throughput["watch_canary_tasks_per_second"] = out["watch"]["canary_tasks"] / max(
            seconds["watch"], 1e-6
        )
    # the watch waits for traffic; the bottleneck is the stage of our own work that took longest
    working = {k: v for k, v in seconds.items() if k != "watch"}
    bottleneck = max(working, key=working.__getitem__) if working else None

    chosen = next(
        (e for e in evaluate.get("evaluations", []) if e["version"] == evaluate.get("chosen")),
        max(evaluate.get("evaluations", []), key=lambda e: e["difference"], default=None),
    )
    improvement = None
    if chosen:
        b, c = chosen["baseline"], chosen["candidate"]
        improvement = {
            "strategy": chosen["strategy"],
            "version": chosen["version"],
            "items": evaluate["items"],
            "accuracy": [b["accuracy"], c["accuracy"]],
            "difference": chosen["difference"],
            "ci95": chosen["ci95"],
            "error_rate": [b["error_rate"], c["error_rate"]],
            "seconds_per_task": [b["seconds_per_task"], c["seconds_per_task"]],
            "cost_per_task": [b.get("cost_per_task"), c.get("cost_per_task")],
            "promoted": out.get("decide", {}).get("action") == "promote",
        }
    cutoff = out.get("cutoff", {})
    until = datetime.fromisoformat(cutoff["cutoff"]) if cutoff.get("cutoff") else datetime.now(UTC)
    since = datetime.fromisoformat(cutoff["since"]) if cutoff.get("since") else None
    live = satisfaction(store, cycle["workload"], since, until)
    cost = _live_cost(store, cycle["workload"], since, until)
    return {
        "cycle_seconds": cycle_seconds,
        "stage_seconds": seconds,
        "bottleneck": bottleneck,
        "throughput": throughput,
        "new_tasks": cutoff.get("new_tasks", 0),
        "signal_density": curate.get("signal_density"),
        "examples": curate.get("examples"),
        "improvement": improvement,
        "live": {**live, "cost_per_task": cost},
        "review": review_metrics(store, cycle["workload"]),
        "served_version": out.get("decide", {}).get("stable_version")
        or out.get("baseline", {}).get("stable_version"),
    }


def _live_cost(store: Store, workload: str, since: datetime | None, until: datetime) -> float | None:
    tc, sc = t.tasks.c, t.steps.c
    conditions = [tc.workload == workload, tc.started_at < until, sc.kind == "llm_call"]
    if since is not None:
        conditions.append(tc.started_at >= since)
    query = (
        select(func.sum(sc.data["cost"].as_float()), func.count(func.distinct(tc.id)))
        .select_from(t.steps.join(t.tasks, tc.id == sc.task_id))
        .where(*conditions)
    )
    with store.engine.connect() as conn:
        total, n = conn.execute(query).one()
    return float(total) / n if n and total is not None else None
