"""Flywheel velocity, computed from the store: how fast and how well the loop turns.

Per cycle: cycle time (whole and per stage) with the bottleneck stage named,
each stage's throughput, signal density (usable examples per 1,000 tasks),
the version-over-version change measured on held-out data (accuracy, which
is tool-call accuracy on this kind of workload, error rate, seconds and cost
per task, with the 95% CI), live cost per task and user satisfaction (share
of positive reactions) in the cycle's traffic window, and the review backlog
and throughput.

Why (``gate_verdicts``): per candidate a cycle measured, the estimate the gate
judged (plain, or the baseline's own labels reweighted to its traffic) with
its CI beside the plain one, the check that refused it, and what the gate
could detect at its n.

Alignment (``metric_alignment``): per agent version, offline accuracy beside
live task completion and satisfaction, and whether an offline gain over its
parent shows live.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from statistics import median
from typing import Any

from sqlalchemy import case, func, select

from flywheel.deploy import list_versions
from flywheel.deploy.live import LivePolicy, live_rates
from flywheel.evaluate.offline import feedback_accuracy, wilson_interval
from flywheel.store import Store
from flywheel.store import tables as t
from flywheel.store.history import evaluation_results, stage_outputs, workload_evaluations

__all__ = [
    "candidate_verdicts",
    "cycle_metrics",
    "gate_verdicts",
    "live_difference",
    "metric_alignment",
    "power_statement",
    "review_metrics",
    "satisfaction",
]


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
        max(evaluate.get("evaluations", []), key=lambda e: e.get("gain", e["difference"]), default=None),
    )
    improvement = None
    if chosen:
        b, c = chosen["baseline"], chosen["candidate"]
        stored = evaluation_results(store, [chosen["evaluation"]] if chosen.get("evaluation") else [])
        [verdict] = candidate_verdicts({**evaluate, "evaluations": [chosen]}, stored)
        improvement = {
            "strategy": chosen["strategy"],
            "version": chosen["version"],
            "items": evaluate["items"],
            "accuracy": [b["accuracy"], c["accuracy"]],
            "difference": chosen["difference"],
            "ci95": chosen["ci95"],
            # the estimate the gate judged, and what refused the candidate
            "estimate": verdict["estimate"],
            "gain": verdict["gain"],
            "gain_ci95": verdict["ci95"],
            "refused_by": verdict["refused_by"],
            "power": verdict["power_text"],
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


# ------------------------------------------------------------------ why: the gate's verdicts


def power_statement(power: dict[str, Any]) -> str:
    """The gate's power in one line: the smallest gain it can detect at its n, and
    the items the smallest gain worth shipping needs when n is short of them."""
    n, items = power.get("n"), power.get("items", power.get("n"))
    at = f"n={n}" if n == items else f"n={n} effective of {items}"
    level = f"{power['power']:.0%} power" if power.get("power") is not None else "power"
    mde = power.get("mde")
    can = (
        f"smallest detectable gain {mde:.1%} at {at} ({level})"
        if mde is not None
        else f"no gain detectable at {at}"
    )
    worth = power.get("min_gain")
    if worth is None:
        return can
    if power.get("enough"):
        return f"{can}; worth shipping: {worth:.1%}"
    needed = power.get("needed_items")
    return f"{can}; {worth:.1%} needs {needed if needed is not None else 'over a million'} items"


def _sequential_statement(sequential: dict[str, Any]) -> str:
    decision = sequential.get("decision")
    if decision:
        return f"anytime-valid test: {decision} at item {sequential['stopped_at']} of {sequential['items']}"
    items, e_win = sequential["items"], sequential["e_win"]
    return f"anytime-valid test: no decision after {items} items (win e = {e_win:.3g})"


def _judged_estimate(decision: dict[str, Any], reweighted: dict[str, Any] | None) -> str:
    """Which estimate the gate went by: its significance test names it; an older
    decision without one is told by the gain it recorded."""
    name = (decision.get("test") or {}).get("name", "")
    if reweighted is None or name.startswith("exact McNemar"):
        return "plain"
    if name.startswith("reweighted"):
        return "reweighted"
    gain = decision.get("gain")
    return "reweighted" if gain is not None and math.isclose(gain, reweighted["difference"]) else "plain"


def candidate_verdicts(
    evaluate: dict[str, Any], stored: dict[str, dict[str, Any]], *, outcome: str | None = None
) -> list[dict[str, Any]]:
    """The gate's verdict on each candidate of a cycle's ``evaluate`` stage outputs.

    ``stored``: the recorded evaluations by id (``evaluation_results``), whose
    decision carries what the stage outputs may not (the test, power, the
    sequential verdict). Each verdict: the estimate judged (``estimate``:
    plain or reweighted; ``gain`` and ``ci95``) beside the plain one
    (``plain_gain``, ``plain_ci95``), ``refused_by`` (the first failed check's
    text, None when it passed), ``power`` and ``power_text`` when recorded,
    and ``status``: promoted, rolled back, chosen, passed (another was
    chosen) or refused."""
    out = []
    for e in evaluate.get("evaluations", []):
        record = stored.get(e.get("evaluation") or "", {})
        decision = dict(record.get("gate") or {})
        decision.update(
            {k: e[k] for k in ("gain", "checks", "promote", "power", "sequential", "test") if k in e}
        )
        reweighted = e["reweighted"] if "reweighted" in e else record.get("reweighted")
        estimate = _judged_estimate(decision, reweighted)
        plain_ci = e.get("ci95") or record.get("ci95")
        gain = decision.get("gain")
        if gain is None:
            gain = (
                reweighted["difference"] if estimate == "reweighted" and reweighted else e.get("difference")
            )
        checks = decision.get("checks") or []
        failed = [c["check"] for c in checks if not c["passed"]]
        passed = bool(decision.get("promote", not failed))
        chosen = e["version"] == evaluate.get("chosen")
        if not passed:
            status = "refused"
        elif chosen:
            status = {"promoted": "promoted", "rolled_back": "rolled back"}.get(outcome or "", "chosen")
        else:
            status = "passed, not chosen"
        power, sequential = decision.get("power"), decision.get("sequential")
        out.append(
            {
                "strategy": e.get("strategy"),
                "version": e["version"],
                "evaluation": e.get("evaluation"),
                "items": evaluate.get("items"),
                "baseline_accuracy": (e.get("baseline") or {}).get("accuracy"),
                "candidate_accuracy": (e.get("candidate") or {}).get("accuracy"),
                "status": status,
                "passed": passed,
                "chosen": chosen,
                "estimate": estimate,
                "gain": gain,
                "ci95": reweighted["ci95"] if estimate == "reweighted" and reweighted else plain_ci,
                "plain_gain": e.get("difference"),
                "plain_ci95": plain_ci,
                "mcnemar_p": e.get("mcnemar_p"),
                "test": decision.get("test"),
                "refused_by": failed[0] if failed else None,
                "checks": checks,
                "power": power,
                "power_text": power_statement(power) if power else None,
                "sequential": sequential,
                "sequential_text": _sequential_statement(sequential) if sequential else None,
            }
        )
    return out


def gate_verdicts(store: Store, cycles: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Cycle id -> the gate's verdicts on its candidates (``candidate_verdicts``),
    for cycle rows as ``list_cycles`` gives them; three queries in all."""
    outputs = stage_outputs(store, [c["id"] for c in cycles], "evaluate")
    ids = [e.get("evaluation") for o in outputs.values() for e in o.get("evaluations", [])]
    stored = evaluation_results(store, [i for i in ids if i])
    return {
        c["id"]: candidate_verdicts(
            outputs.get(c["id"], {}), stored, outcome=(c["result"] or {}).get("outcome")
        )
        for c in cycles
    }


# ------------------------------------------------------------------ alignment: offline vs live


def live_difference(
    x_parent: int, n_parent: int, x_version: int, n_version: int, *, offline_gain: float, min_n: int
) -> dict[str, Any]:
    """A live rate of a version against its parent's: the difference with its 95%
    CI (Newcombe's hybrid score interval, from the two Wilson intervals);
    ``better`` (``worse``) when both have ``min_n`` and the CI is above (below)
    zero. ``enough``: both have ``min_n`` and the CI is narrow enough
    (half-width at most ``offline_gain``) that a live gain as large as the
    offline one would put it above zero; ``needed``: about how many per version
    would (normal approximation)."""
    p_a = x_parent / n_parent if n_parent else None
    p_b = x_version / n_version if n_version else None
    if p_a is None or p_b is None:
        return {
            "difference": None,
            "ci95": None,
            "better": False,
            "worse": False,
            "enough": False,
            "needed": None,
        }
    low_a, high_a = wilson_interval(x_parent, n_parent)
    low_b, high_b = wilson_interval(x_version, n_version)
    diff = p_b - p_a
    low = diff - math.sqrt((p_b - low_b) ** 2 + (high_a - p_a) ** 2)
    high = diff + math.sqrt((high_b - p_b) ** 2 + (p_a - low_a) ** 2)
    pooled = min(max((x_parent + x_version) / (n_parent + n_version), 0.05), 0.95)
    needed = (
        max(min_n, math.ceil(2 * 1.96**2 * pooled * (1 - pooled) / offline_gain**2))
        if offline_gain > 0
        else None
    )
    sized = min(n_parent, n_version) >= min_n
    return {
        "difference": diff,
        "ci95": [low, high],
        "better": sized and low > 0,
        "worse": sized and high < 0,
        "enough": sized and offline_gain > 0 and (high - low) / 2 <= offline_gain,
        "needed": needed,
    }


def _live(store: Store, workload: str, version_id: str) -> dict[str, Any]:
    """A version's live traffic in the definitions the loop already acts on: task
    completion is the watch's success rate (``deploy.live.live_rates``),
    satisfaction the share of rated tasks rated up (``feedback_accuracy``, which
    the gate's reweighting uses)."""
    rates = live_rates(store, workload, version_id, None)
    ratings = feedback_accuracy(store, version_id)
    rated = ratings["up"] + ratings["down"]
    return {
        "tasks": rates.tasks,
        "completed": rates.successes,
        "completion": rates.successes / rates.tasks if rates.tasks else None,
        "completion_ci95": list(wilson_interval(rates.successes, rates.tasks)) if rates.tasks else None,
        "rated": rated,
        "rated_up": ratings["up"],
        "satisfaction": ratings["up"] / rated if rated else None,
        "satisfaction_ci95": list(wilson_interval(ratings["up"], rated)) if rated else None,
    }


def _alignment_verdict(
    row: dict[str, Any], parent: dict[str, Any] | None, min_live_tasks: int
) -> tuple[str, bool, str]:
    """(verdict, flagged, detail) of a version's offline gain against its live rates."""
    gain = row["offline_gain"]
    if parent is None or gain is None:
        return "no parent measured", False, ""
    if gain["gain"] is None or gain["gain"] <= 0:
        return "no offline gain", False, ""
    live, before = row["live"], parent["live"]
    if not live["tasks"]:
        return "not served live", False, ""
    if not before["tasks"]:
        return "parent not served live", False, f"offline {gain['gain']:+.1%}; nothing live to compare with"
    tests = {}
    if live["completed"] or before["completed"]:  # a workload that reports no success gives no evidence
        tests["completion"] = live_difference(
            before["completed"],
            before["tasks"],
            live["completed"],
            live["tasks"],
            offline_gain=gain["gain"],
            min_n=min_live_tasks,
        )
    tests["satisfaction"] = live_difference(
        before["rated_up"],
        before["rated"],
        live["rated_up"],
        live["rated"],
        offline_gain=gain["gain"],
        min_n=min_live_tasks,
    )
    row["live_vs_parent"] = tests
    shown = [
        f"{name} {t['difference']:+.1%} [{t['ci95'][0]:+.1%}, {t['ci95'][1]:+.1%}]"
        for name, t in tests.items()
        if t["difference"] is not None
    ]
    detail = f"offline {gain['gain']:+.1%}; live vs parent: " + ("; ".join(shown) or "no rates")
    if any(t["better"] for t in tests.values()):
        return "seen live", False, detail
    if any(t["enough"] for t in tests.values()):
        return "offline gain not seen live", True, detail
    needed = min((t["needed"] for t in tests.values() if t["needed"] is not None), default=None)
    ask = f"; about {needed} per version would show a {gain['gain']:+.1%} gain" if needed else ""
    return "too few live tasks", False, detail + ask


def metric_alignment(
    store: Store, workload: str, *, min_live_tasks: int = LivePolicy.min_tasks
) -> list[dict[str, Any]]:
    """Per agent version (oldest first): offline accuracy on its latest evaluation
    (the standing set or a dataset's eval items), the gain over its parent the
    gate judged, and live task completion and satisfaction with 95% CIs. A
    version whose offline gain over its parent does not show live (neither rate
    better than the parent's, by a CI above zero, where enough live tasks exist
    to see a gain that size) is ``flagged``: "offline gain not seen live".
    Versions never evaluated nor served are left out."""
    versions = list_versions(store, workload)
    by_id = {v.id: v for v in versions}
    offline: dict[str, dict[str, Any]] = {}
    gains: dict[str, dict[str, Any]] = {}
    for ev in workload_evaluations(store, workload):  # oldest first: the latest wins
        result = ev["result"] or {}
        items = result.get("items")
        for side, vid in (("baseline", ev["baseline_id"]), ("candidate", ev["candidate_id"])):
            accuracy = (result.get(side) or {}).get("accuracy")
            if accuracy is not None and items:
                low, high = wilson_interval(round(accuracy * items), items)
                offline[vid] = {
                    "accuracy": accuracy,
                    "n": items,
                    "ci95": [low, high],
                    "evaluation": ev["id"],
                }
        version = by_id.get(ev["candidate_id"])
        if version is not None and ev["baseline_id"] == version.parent_id:
            entry = {**result, "evaluation": ev["id"], "version": version.id, "strategy": version.strategy}
            [verdict] = candidate_verdicts({"items": items, "evaluations": [entry]}, {ev["id"]: result})
            gains[version.id] = {k: verdict[k] for k in ("estimate", "gain", "ci95", "passed", "refused_by")}
    rows: dict[str, dict[str, Any]] = {}
    for v in versions:
        live = _live(store, workload, v.id)
        if v.id not in offline and not live["tasks"]:
            continue
        parent = by_id.get(v.parent_id) if v.parent_id else None
        rows[v.id] = {
            "version": v.id,
            "number": v.number,
            "strategy": v.strategy,
            "parent": v.parent_id,
            "parent_number": parent.number if parent else None,
            "offline": offline.get(v.id),
            "offline_gain": gains.get(v.id),
            "live": live,
            "live_vs_parent": {},
        }
    for row in rows.values():
        parent_row = rows.get(row["parent"]) if row["parent"] else None
        row["verdict"], row["flagged"], row["detail"] = _alignment_verdict(row, parent_row, min_live_tasks)
    return list(rows.values())
