"""Live comparison of a canary against the stable version, and the automatic
promote-or-rollback that follows.

The metrics are read from the store per serving version since the canary
started: task success, negative feedback, tool errors (rates, compared), and
latency and cost per task (reported). Each rate is compared with a mixture
sequential probability ratio test (mSPRT, Johari et al. 2017): its p-value is
valid however often one looks, so watching continuously does not inflate the
false-alarm rate beyond ``alpha``.

Decision: a significant regression on any rate rolls the canary back; a
significant win on success with no regression, or the traffic budget spent
without a regression, promotes it; otherwise keep watching.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, select

from flywheel.deploy.versions import deployment, promote, rollback
from flywheel.store import Store
from flywheel.store import tables as t

__all__ = ["LivePolicy", "Rates", "decide", "live_rates", "msprt_p", "watch"]


@dataclass
class Rates:
    tasks: int = 0
    successes: int = 0
    negative: int = 0
    tool_errors: int = 0
    seconds: float = 0.0
    cost: float = 0.0


def msprt_p(x_a: int, n_a: int, x_b: int, n_b: int, *, tau: float = 0.1) -> tuple[float, float]:
    """Always-valid p-value that two proportions differ, and the observed difference b - a.

    Normal mixture over the difference with prior N(0, tau^2)."""
    if n_a == 0 or n_b == 0:
        return 1.0, 0.0
    p_a, p_b = x_a / n_a, x_b / n_b
    pooled = (x_a + x_b) / (n_a + n_b)
    variance = max(pooled * (1 - pooled), 1e-6) * (1 / n_a + 1 / n_b)
    diff = p_b - p_a
    tau2 = tau * tau
    log_lr = 0.5 * math.log(variance / (variance + tau2)) + tau2 * diff * diff / (
        2 * variance * (variance + tau2)
    )
    return min(1.0, math.exp(-log_lr)), diff


@dataclass
class LivePolicy:
    alpha: float = 0.05
    tau: float = 0.1
    min_tasks: int = 50  # per arm, before any decision
    budget_tasks: int = 2000  # canary tasks after which no regression means promote
    promote_on_win: bool = True


def decide(stable: Rates, canary: Rates, policy: LivePolicy) -> dict[str, Any]:
    """rollback / promote / continue, with the tests behind it."""
    tests = {}
    metrics = (("success", "higher"), ("negative_feedback", "lower"), ("tool_error", "lower"))
    level = policy.alpha / len(metrics)  # Bonferroni: the family stays within alpha
    for name, better in metrics:
        count = {"success": "successes", "negative_feedback": "negative", "tool_error": "tool_errors"}[name]
        p, diff = msprt_p(
            getattr(stable, count), stable.tasks, getattr(canary, count), canary.tasks, tau=policy.tau
        )
        worse = diff < 0 if better == "higher" else diff > 0
        tests[name] = {
            "p": p,
            "difference": diff,
            "regression": p < level and worse,
            "win": p < level and not worse,
        }
    enough = min(stable.tasks, canary.tasks) >= policy.min_tasks
    if enough and any(test["regression"] for test in tests.values()):
        action = "rollback"
    elif enough and policy.promote_on_win and tests["success"]["win"] or canary.tasks >= policy.budget_tasks:
        action = "promote"
    else:
        action = "continue"
    return {
        "action": action,
        "tests": tests,
        "stable": stable.__dict__,
        "canary": canary.__dict__,
        "reason": _reason(action, tests, canary, policy),
    }


def _reason(action: str, tests: dict[str, Any], canary: Rates, policy: LivePolicy) -> str:
    if action == "rollback":
        bad = [
            f"{k} {v['difference']:+.3f} (always-valid p={v['p']:.3g})"
            for k, v in tests.items()
            if v["regression"]
        ]
        return "significant regression: " + ", ".join(bad)
    if action == "promote" and tests["success"]["win"]:
        win = tests["success"]
        return f"significant win on success {win['difference']:+.3f} (p={win['p']:.3g})"
    if action == "promote":
        return f"{canary.tasks} canary tasks (budget {policy.budget_tasks}) without a regression"
    return "not enough evidence yet"


def live_rates(store: Store, workload: str, version_id: str, since: datetime | None) -> Rates:
    c = t.tasks.c
    conditions = [c.workload == workload, c.agent_version == version_id, c.ended_at.is_not(None)]
    if since is not None:
        conditions.append(c.started_at >= since)
    negative_tasks = select(t.feedback.c.task_id).where(
        (t.feedback.c.thumbs == -1)
        | (t.feedback.c.rating <= 2)
        | t.feedback.c.retried
        | t.feedback.c.abandoned
    )
    error_tasks = select(t.steps.c.task_id).where(
        and_(t.steps.c.kind == "tool_call", t.steps.c.error.is_not(None))
    )
    tool_cost = (
        select(t.steps.c.task_id, func.sum(t.steps.c.data["cost"].as_float()).label("cost"))
        .where(t.steps.c.kind == "llm_call")
        .group_by(t.steps.c.task_id)
        .subquery()
    )
    query = (
        select(
            func.count(),
            func.sum(case((c.success.is_(True), 1), else_=0)),
            func.sum(case((c.id.in_(negative_tasks), 1), else_=0)),
            func.sum(case((c.id.in_(error_tasks), 1), else_=0)),
            func.avg(c.duration_ms),
            func.avg(tool_cost.c.cost),
        )
        .select_from(t.tasks.outerjoin(tool_cost, tool_cost.c.task_id == c.id))
        .where(*conditions)
    )
    with store.engine.connect() as conn:
        n, ok, neg, errs, ms, cost = conn.execute(query).one()
    return Rates(
        int(n or 0), int(ok or 0), int(neg or 0), int(errs or 0), float(ms or 0) / 1000, float(cost or 0)
    )


def watch(
    store: Store,
    workload: str,
    policy: LivePolicy | None = None,
    *,
    apply: bool = True,
    actor: str = "watcher",
) -> dict[str, Any]:
    """Compare the canary with stable now; with ``apply``, act on the decision."""
    policy = policy or LivePolicy()
    current = deployment(store, workload)
    if current is None or not current["canary_version"]:
        return {"action": "none", "reason": f"workload {workload!r} has no canary"}
    since = current["updated_at"]
    stable = live_rates(store, workload, current["stable_version"], since)
    canary = live_rates(store, workload, current["canary_version"], since)
    decision = decide(stable, canary, policy)
    decision["canary_version"] = current["canary_version"]
    if apply and decision["action"] == "rollback":
        rollback(store, workload, actor=actor, reason=decision["reason"])
    elif apply and decision["action"] == "promote":
        promote(
            store,
            workload,
            current["canary_version"],
            actor=actor,
            reason=decision["reason"],
            expect_canary=current["canary_version"],
        )
    return decision
