"""One flywheel cycle: cutoff -> curate -> review -> improve -> evaluate ->
canary -> watch -> decide, each stage a checkpoint in the store.

A stage records its inputs and outputs in ``cycle_stages`` when it finishes;
a cycle that stopped (a crash, a stage that failed, a review it waits for)
is resumed by the next ``run_cycle`` on its workload, which skips the
finished stages and starts from their recorded outputs. Each stage is safe to
run twice: curation reuses a dataset already cut at the cycle's cutoff,
versions are content-addressed, evaluation results are cached per (version,
item), and deployment changes are compare-and-swap. At most one cycle per
workload runs at a time (``StoreLock``, released on a crash when its lease
runs out).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, update

from flywheel.agents.tool_agent import AgentConfig
from flywheel.curate import DEFAULT_RULES, load_rules, parse_rules
from flywheel.curate import curate as run_curate
from flywheel.curate.eval_set import grow_eval_set
from flywheel.cycle.lock import StoreLock, _aware
from flywheel.deploy import create_version, deployment, get_version, promote, rollback, set_canary
from flywheel.deploy.live import LivePolicy, live_rates
from flywheel.deploy.live import watch as watch_canary
from flywheel.errors import InvalidInput
from flywheel.evaluate.offline import (
    EvalItem,
    GatePolicy,
    compare,
    eval_items,
    evaluate_version,
    feedback_accuracy,
    gate,
    label_origins,
    record_evaluation,
    should_stop,
)
from flywheel.evaluate.standing import standing_items
from flywheel.improve import STRATEGIES, build_candidate, check_strategy
from flywheel.models.base import ChatModel
from flywheel.records import new_id, utcnow
from flywheel.review.budget import boost_review_items, select_review_batch
from flywheel.store import Store
from flywheel.store import tables as t

__all__ = [
    "STAGES",
    "CyclePolicy",
    "CycleRun",
    "GateSettings",
    "abandon_cycle",
    "ensure_baseline",
    "get_cycle",
    "list_cycles",
    "run_cycle",
]

log = logging.getLogger(__name__)

STAGES = ("baseline", "cutoff", "curate", "review", "improve", "evaluate", "canary", "watch", "decide")


class GateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_improvement: float = 0.0
    max_error_rate_increase: float = Field(0.02, ge=0)
    max_latency_ratio: float = Field(1.5, gt=0)
    max_cost_ratio: float = Field(1.5, gt=0)
    max_seconds_per_task: float | None = Field(None, gt=0)  # an SLO instead of the ratio
    max_cost_per_task: float | None = Field(None, gt=0)  # a ceiling instead of the ratio
    # judge the gain with the baseline's own labels reweighted to its traffic (see evaluate)
    reweight_own_labels: bool = True
    # the test that the candidate is better, one-sided at alpha: exact McNemar on all
    # items, or the anytime-valid e-value for an evaluation that stops early
    alpha: float = Field(0.05, gt=0, lt=0.5)
    test: Literal["exact", "sequential"] = "exact"
    # the smallest gain worth shipping: the gate says how many items detect it with this power
    min_gain: float = Field(0.05, gt=0, le=1)
    power: float = Field(0.8, gt=0, lt=1)


class CyclePolicy(BaseModel):
    """A workload's cycle settings (``flywheel cycle run --policy FILE``, YAML or TOML)."""

    model_config = ConfigDict(extra="forbid")

    rules: str | None = None  # a rules file; default: the built-in rules
    base_config: dict[str, Any] = Field(default_factory=lambda: {"model": "local", "max_tokens": 128})
    review: Literal["skip", "wait"] = "skip"  # the cycle's review batch: go on, or wait for it
    # the pending items each cycle asks reviewers for, highest expected value of a label first
    review_budget: int = Field(50, ge=0)
    strategies: list[str] = Field(default_factory=lambda: ["few_shot"], min_length=1)
    few_shot_k: int = Field(3, ge=1, le=16)
    eval_workers: int = Field(1, ge=1, le=16)
    min_eval_items: int = Field(10, ge=1)
    # what the gate judges on: the workload's standing evaluation set, which grows
    # every cycle (``flywheel.curate.eval_set``), or only this cycle's eval split
    eval_set: Literal["standing", "dataset"] = "standing"
    # with gate.test "sequential": candidates answer this many items at a time and
    # stop once the anytime-valid test is conclusive (a clear win or loss)
    eval_batch: int = Field(25, ge=1)
    eval_max_age_days: float | None = Field(None, gt=0)  # older labels wait for re-validation
    gate: GateSettings = Field(default_factory=GateSettings)
    canary_share: float = Field(0.2, gt=0, le=1)
    watch_seconds: float = Field(600.0, ge=0)  # how long the canary is watched at most
    watch_min_tasks: int = Field(30, ge=0)  # canary tasks before "no harm seen" counts
    watch_poll_seconds: float = Field(10.0, gt=0)
    # the watch ended without a significant difference: promote (the offline gate
    # already showed a gain and live traffic showed no harm) or roll back
    after_watch: Literal["promote", "rollback"] = "promote"

    def model_post_init(self, __context: Any) -> None:
        for spec in self.strategies:  # a name, or a combination such as lora+prompt_rules
            try:
                check_strategy(spec)
            except InvalidInput as exc:
                raise ValueError(f"{exc.message}; known: {sorted(STRATEGIES)}, combined with +") from None

    @classmethod
    def load(cls, path: Path) -> CyclePolicy:
        import tomllib

        import yaml
        from pydantic import ValidationError

        try:
            text = path.read_text()
            data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise InvalidInput(f"cannot read the cycle policy {path}: {exc}") from exc
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidInput(f"{path}: {problems}") from exc


@dataclass
class CycleRun:
    """What ``run_cycle`` hands back: the cycle record and how it ended."""

    id: str
    workload: str
    number: int
    status: str
    outcome: str
    result: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Context:
    store: Store
    workload: str
    policy: CyclePolicy
    cycle_id: str
    model_for: Callable[[AgentConfig], ChatModel]
    traffic: Callable[[int], None] | None
    progress: Callable[[str, str], None]
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)


class _Wait(Exception):
    """A stage cannot finish yet (pending reviews): the cycle pauses."""


def _default_model_for(store: Store, config: AgentConfig) -> ChatModel:
    from flywheel.models.registry import load_model

    return load_model(config.model, adapter=config.adapter, store=store)


# ------------------------------------------------------------------ stages


def ensure_baseline(
    store: Store, workload: str, base_config: dict[str, Any], *, actor: str
) -> tuple[str, bool]:
    """The workload's stable version, created from ``base_config`` and promoted
    if it has none yet; and whether it was created."""
    current = deployment(store, workload)
    if current and current["stable_version"]:
        return current["stable_version"], False
    version = create_version(store, workload, base_config, actor=actor)
    promote(store, workload, version.id, actor=actor, reason="the base version")
    return version.id, True


def _baseline(ctx: _Context) -> dict[str, Any]:
    stable, created = ensure_baseline(
        ctx.store, ctx.workload, ctx.policy.base_config, actor=f"cycle:{ctx.cycle_id}"
    )
    return {"stable_version": stable, "created": created}


def _cutoff(ctx: _Context) -> dict[str, Any]:
    previous = ctx.store.latest_dataset(ctx.workload)
    since = _aware(previous["cutoff"]) if previous and previous["cutoff"] else None
    cutoff = utcnow()
    c = t.tasks.c
    query = (
        select(func.count()).select_from(t.tasks).where(c.workload == ctx.workload, c.ingested_at <= cutoff)
    )
    if since is not None:
        query = query.where(c.ingested_at > since)
    with ctx.store.engine.connect() as conn:
        new_tasks = int(conn.execute(query).scalar_one())
    return {
        "cutoff": cutoff.isoformat(),
        "new_tasks": new_tasks,
        "since": since.isoformat() if since else None,
    }


def _curate(ctx: _Context) -> dict[str, Any]:
    cutoff = datetime.fromisoformat(ctx.outputs["cutoff"]["cutoff"])
    latest = ctx.store.latest_dataset(ctx.workload)
    if latest and latest["cutoff"] and abs((_aware(latest["cutoff"]) - cutoff).total_seconds()) < 1e-3:
        data = latest  # this cycle's curation finished before a crash: reuse it
    else:
        path = ctx.policy.rules
        rules = load_rules(Path(path)) if path else parse_rules(DEFAULT_RULES, name="default rules")
        result = run_curate(ctx.store, ctx.workload, rules, now=cutoff)
        data = ctx.store.get_dataset(result.dataset_id)
    s = data["summary"]
    grown = None
    if ctx.policy.eval_set == "standing":
        latest_set = ctx.store.latest_eval_set(ctx.workload)
        if latest_set is None or latest_set["dataset_id"] != data["id"]:  # not grown before a crash
            grown = grow_eval_set(
                ctx.store, ctx.workload, data["id"], max_age_days=ctx.policy.eval_max_age_days, now=cutoff
            )
        else:
            grown = {k: latest_set[k] for k in ("items", "added")} | {"version": latest_set["number"]}
    return {
        "eval_set": grown,
        "dataset": data["id"],
        "tasks_processed": s.get("tasks_processed", 0),
        "examples": s.get("examples", 0),
        "splits": s.get("splits", {}),
        "signal_density": s.get("signal_density", {}).get("overall", 0.0),
        "review_items": s.get("review_items", 0),
    }


def _review(ctx: _Context) -> dict[str, Any]:
    """Rank the pending review items again and give the cycle's review budget to
    the best (``flywheel.review.budget``); ``review: wait`` waits for that batch."""
    batch = select_review_batch(
        ctx.store,
        ctx.workload,
        ctx.cycle_id,
        ctx.policy.review_budget,
        dataset_id=ctx.outputs["curate"]["dataset"],
        standing=ctx.policy.eval_set == "standing",
    )
    if batch.pending and ctx.policy.review == "wait":
        raise _Wait(
            f"{batch.pending} review items pending for {ctx.workload} (this cycle's budget: "
            f"{batch.budget}; {batch.backlog} more ranked, not queued)"
        )
    return {**batch.as_dict(), "policy": ctx.policy.review}


def _improve(ctx: _Context) -> dict[str, Any]:
    dataset = ctx.outputs["curate"]["dataset"]
    base = get_version(ctx.store, ctx.outputs["baseline"]["stable_version"])
    held_out = len(_gate_items(ctx, dataset))
    if held_out < ctx.policy.min_eval_items:
        # a candidate the gate cannot judge could never be promoted: build none
        # (minutes of training saved) until more traffic fills the eval split
        why = f"{held_out} held-out items (the policy needs {ctx.policy.min_eval_items})"
        return {"dataset": dataset, "base": base.id, "candidates": [], "skipped": why}
    candidates: list[dict[str, Any]] = []
    for name in ctx.policy.strategies:
        try:
            candidate = build_candidate(ctx.store, ctx.workload, dataset, base, name, k=ctx.policy.few_shot_k)
        except InvalidInput as exc:  # not enough data for this strategy yet
            candidates.append({"strategy": name, "version": None, "skipped": exc.message})
            continue
        candidates.append(
            {
                "strategy": name,
                "version": candidate.version.id,
                "number": candidate.version.number,
                "changes": candidate.changes,
            }
        )
    return {"dataset": dataset, "base": base.id, "candidates": candidates}


def _gate_items(ctx: _Context, dataset: str) -> list[EvalItem]:
    """What the gate judges on: the standing set, or the dataset's eval split."""
    if ctx.policy.eval_set == "standing":
        return standing_items(ctx.store, ctx.workload)
    return _held_out_items(ctx.store, dataset)


def _held_out_items(store: Store, dataset: str) -> list[EvalItem]:
    try:
        return eval_items(store, dataset)
    except InvalidInput:  # no usable eval split yet: nothing can be judged this cycle
        return []


def _evaluate(ctx: _Context) -> dict[str, Any]:
    dataset = ctx.outputs["curate"]["dataset"]
    items = _gate_items(ctx, dataset)
    built = [c for c in ctx.outputs["improve"]["candidates"] if c["version"]]
    if len(items) < ctx.policy.min_eval_items or not built:
        why = (
            f"{len(items)} held-out items (the policy needs {ctx.policy.min_eval_items})"
            if len(items) < ctx.policy.min_eval_items
            else "no candidate was built"
        )
        return {"items": len(items), "evaluations": [], "chosen": None, "reason": why}
    base = get_version(ctx.store, ctx.outputs["baseline"]["stable_version"])
    policy = GatePolicy(**ctx.policy.gate.model_dump())
    baseline = evaluate_version(
        ctx.store, base, items, ctx.model_for, dataset_id=dataset, workers=ctx.policy.eval_workers
    )
    origins = label_origins(ctx.store, items, base.id)
    ratings = feedback_accuracy(ctx.store, base.id)
    evaluations = []
    disagree: set[str] = set()  # items the candidates and the stable version answer differently
    for c in built:
        ctx.progress("evaluate", f"{c['strategy']} candidate on {len(items)} held-out items")
        version = get_version(ctx.store, c["version"])
        results, stopped = _answer_candidate(ctx, version, items, baseline, dataset)
        disagree.update(i for i, r in results.items() if r.correct != baseline[i].correct)
        comparison = compare(
            {i: baseline[i] for i in results},
            results,
            origin_of=origins,
            baseline_ratings=ratings,
            order=list(results),
        )
        decision = gate(comparison, policy)
        result = {
            "dataset": dataset,
            "baseline_version": base.id,
            "candidate_version": version.id,
            **comparison,
            "gate": decision,
        }
        evaluation = record_evaluation(ctx.store, ctx.workload, dataset, base.id, version.id, result)
        evaluations.append(
            {
                "evaluation": evaluation,
                "strategy": c["strategy"],
                "version": version.id,
                "baseline": comparison["baseline"],
                "candidate": comparison["candidate"],
                "difference": comparison["difference"],
                "ci95": comparison["ci95"],
                "mcnemar_p": comparison["mcnemar_p"],
                "per_origin": comparison["per_origin"],
                "reweighted": comparison["reweighted"],
                "gain": decision["gain"],  # the estimate the gate judged
                "promote": decision["promote"],
                "checks": decision["checks"],
                "power": decision.get("power"),
                "stopped_early": stopped,
            }
        )
    passing = [e for e in evaluations if e["promote"]]
    chosen = max(passing, key=lambda e: e["gain"])["version"] if passing else None
    reason = "" if chosen else "no candidate passed the gate"
    out: dict[str, Any] = {
        "items": len(items),
        "evaluations": evaluations,
        "chosen": chosen,
        "reason": reason,
    }
    # Their labels decide the gate: a reviewer's look at them is worth the most.
    examples = ctx.store.examples_by_id(sorted(disagree))
    tasks = [row["task_id"] for row in examples.values()]
    out["review_boosted"] = boost_review_items(
        ctx.store, ctx.workload, tasks, "candidate and stable version disagree here", 1.0
    )
    # Too few items to see the smallest gain worth shipping: say how many labels more.
    short = [e["power"] for e in evaluations if e.get("power") and not e["power"].get("enough")]
    if not chosen and short and all(p.get("needed_items") for p in short):
        more = max(0, min(p["needed_items"] for p in short) - len(items))
        out["labels_needed"] = more
        out["reason"] = (
            f"{reason}; the set is too small to see a gain of {short[0]['min_gain']:.0%}: {more} more "
            f"labelled items would (review budget: {ctx.policy.review_budget} a cycle)"
        )
    return out


def _answer_candidate(
    ctx: _Context, version: Any, items: list[EvalItem], baseline: dict[str, Any], dataset: str
) -> tuple[dict[str, Any], int | None]:
    """The candidate's answers; with the sequential test, in batches in a fixed
    order that stop once the evidence is conclusive either way (the item count
    it stopped at, else None)."""
    gate_settings = ctx.policy.gate
    if gate_settings.test != "sequential":
        every = evaluate_version(
            ctx.store, version, items, ctx.model_for, dataset_id=dataset, workers=ctx.policy.eval_workers
        )
        return every, None
    import random

    order = list(items)
    random.Random(ctx.cycle_id).shuffle(order)  # fixed before any outcome is seen
    results: dict[str, Any] = {}
    for start in range(0, len(order), ctx.policy.eval_batch):
        batch = order[start : start + ctx.policy.eval_batch]
        results.update(
            evaluate_version(
                ctx.store, version, batch, ctx.model_for, dataset_id=dataset, workers=ctx.policy.eval_workers
            )
        )
        outcomes = [(baseline[i.id].correct, results[i.id].correct) for i in order[: start + len(batch)]]
        if should_stop(outcomes, gate_settings.alpha) and start + len(batch) < len(order):
            return results, start + len(batch)
    return results, None


def _canary(ctx: _Context) -> dict[str, Any]:
    chosen = ctx.outputs["evaluate"]["chosen"]
    if chosen is None:
        return {"version": None}
    current = deployment(ctx.store, ctx.workload) or {}
    if current.get("canary_version") != chosen:
        set_canary(ctx.store, ctx.workload, chosen, ctx.policy.canary_share, actor=f"cycle:{ctx.cycle_id}")
        current = deployment(ctx.store, ctx.workload) or {}
    return {"version": chosen, "share": ctx.policy.canary_share, "since": current["updated_at"].isoformat()}


def _watch(ctx: _Context) -> dict[str, Any]:
    version = ctx.outputs["canary"]["version"]
    if version is None:
        return {"decision": "none", "reason": "no canary"}
    since = datetime.fromisoformat(ctx.outputs["canary"]["since"])
    policy = ctx.policy
    deadline = time.monotonic() + policy.watch_seconds
    decision: dict[str, Any] = {"action": "none", "reason": "not watched"}
    while True:
        if ctx.traffic is not None:
            ctx.traffic(policy.watch_min_tasks)  # the caller serves live traffic meanwhile
        decision = watch_canary(ctx.store, ctx.workload, LivePolicy(), apply=False)
        canary = live_rates(ctx.store, ctx.workload, version, since)
        decision["canary_tasks"] = canary.tasks
        ctx.progress("watch", f"canary {canary.tasks} tasks: {decision['action']}")
        if decision["action"] in ("promote", "rollback") or time.monotonic() >= deadline:
            break
        if ctx.traffic is None:
            time.sleep(policy.watch_poll_seconds)
        elif canary.tasks >= policy.watch_min_tasks:
            break
    action = decision["action"]
    if action not in ("promote", "rollback"):
        seen = decision["canary_tasks"]
        if seen >= policy.watch_min_tasks:
            action = policy.after_watch
            decision["reason"] = f"no significant difference after {seen} canary tasks: {action} per policy"
        else:
            action = "rollback"
            decision["reason"] = (
                f"only {seen} canary tasks in {policy.watch_seconds:.0f} s (policy: {policy.watch_min_tasks})"
            )
    return {"decision": action, "reason": decision["reason"], "canary_tasks": decision["canary_tasks"]}


def _decide(ctx: _Context) -> dict[str, Any]:
    version = ctx.outputs["canary"]["version"]
    action = ctx.outputs["watch"]["decision"]
    current = deployment(ctx.store, ctx.workload) or {}
    actor = f"cycle:{ctx.cycle_id}"
    if version is None:
        return {"action": "none", "stable_version": current.get("stable_version")}
    if current.get("canary_version") == version:  # not yet applied (a resumed cycle may find it done)
        reason = ctx.outputs["watch"]["reason"]
        if action == "promote":
            promote(ctx.store, ctx.workload, version, actor=actor, reason=reason, expect_canary=version)
        else:
            rollback(ctx.store, ctx.workload, actor=actor, reason=reason)
    current = deployment(ctx.store, ctx.workload) or {}
    promoted = current.get("stable_version") == version
    return {"action": "promote" if promoted else "rollback", "stable_version": current.get("stable_version")}


_RUNNERS: dict[str, Callable[[_Context], dict[str, Any]]] = {
    "baseline": _baseline,
    "cutoff": _cutoff,
    "curate": _curate,
    "review": _review,
    "improve": _improve,
    "evaluate": _evaluate,
    "canary": _canary,
    "watch": _watch,
    "decide": _decide,
}


# ------------------------------------------------------------------ records


def _unfinished(store: Store, workload: str) -> dict[str, Any] | None:
    c = t.cycles.c
    with store.engine.connect() as conn:
        row = (
            conn.execute(
                select(t.cycles)
                .where(c.workload == workload, c.status.in_(("running", "waiting", "failed")))
                .order_by(c.number.desc())
            )
            .mappings()
            .first()
        )
    return dict(row) if row else None


def _start(store: Store, workload: str, policy: CyclePolicy, trigger: str) -> dict[str, Any]:
    c = t.cycles.c
    with store._writing() as conn:
        number = conn.execute(select(func.coalesce(func.max(c.number), 0)).where(c.workload == workload))
        row: dict[str, Any] = {
            "id": new_id(),
            "workload": workload,
            "number": int(number.scalar_one()) + 1,
            "status": "running",
            "trigger": trigger,
            "policy": policy.model_dump(mode="json"),
            "result": {},
            "started_at": utcnow(),
            "finished_at": None,
        }
        conn.execute(t.cycles.insert(), row)
        # the cycle answers the workload's open degradation alerts
        conn.execute(
            update(t.alerts)
            .where(t.alerts.c.workload == workload, t.alerts.c.cycle_id.is_(None))
            .values(cycle_id=row["id"])
        )
        store._audit(conn, "cycle", "cycle.start", "cycle", row["id"], {"trigger": trigger})
    return row


def _stage_rows(store: Store, cycle_id: str) -> dict[str, dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.cycle_stages).where(t.cycle_stages.c.cycle_id == cycle_id)).mappings()
        return {r["stage"]: dict(r) for r in rows}


def _save_stage(store: Store, cycle_id: str, stage: str, **values: Any) -> None:
    c = t.cycle_stages.c
    with store._writing() as conn:
        changed = conn.execute(
            update(t.cycle_stages).where(c.cycle_id == cycle_id, c.stage == stage).values(**values)
        ).rowcount
        if not changed:
            conn.execute(
                t.cycle_stages.insert(),
                {
                    "cycle_id": cycle_id,
                    "stage": stage,
                    "position": STAGES.index(stage),
                    "inputs": {},
                    "outputs": {},
                    "error": None,
                    "started_at": utcnow(),
                    "finished_at": None,
                    **values,
                },
            )


def _finish(store: Store, cycle_id: str, status: str, result: dict[str, Any]) -> None:
    with store._writing() as conn:
        conn.execute(
            update(t.cycles)
            .where(t.cycles.c.id == cycle_id)
            .values(status=status, result=result, finished_at=utcnow() if status != "waiting" else None)
        )
        store._audit(conn, "cycle", f"cycle.{status}", "cycle", cycle_id, {"outcome": result.get("outcome")})


def _outcome(outputs: dict[str, dict[str, Any]]) -> str:
    """promoted, rolled_back (the canary regressed live), gate_failed (candidates
    were measured and none passed the gate) or no_candidate (none to measure)."""
    decided = outputs.get("decide", {}).get("action")
    if decided in ("promote", "rollback"):
        return "promoted" if decided == "promote" else "rolled_back"
    return "gate_failed" if outputs.get("evaluate", {}).get("evaluations") else "no_candidate"


def run_cycle(
    store: Store,
    workload: str,
    policy: CyclePolicy | None = None,
    *,
    trigger: str = "manual",
    model_for: Callable[[AgentConfig], ChatModel] | None = None,
    traffic: Callable[[int], None] | None = None,
    progress: Callable[[str, str], None] | None = None,
    lock_ttl: float = 60.0,
) -> CycleRun:
    """Run (or resume) the workload's cycle to its end or to a wait.

    ``traffic(n)``, when given, is called during the watch to serve about ``n``
    live tasks (a simulator or a load generator); without it the watch polls
    the store for real traffic until ``policy.watch_seconds``.
    """
    from flywheel.cycle.metrics import cycle_metrics

    with StoreLock(store, f"cycle:{workload}", ttl=lock_ttl):
        row = _unfinished(store, workload)
        if row is None:
            row = _start(store, workload, policy or CyclePolicy(), trigger)
        else:
            log.info("resuming cycle %s of %s", row["number"], workload)
            with store._writing() as conn:
                conn.execute(update(t.cycles).where(t.cycles.c.id == row["id"]).values(status="running"))
        chosen = CyclePolicy.model_validate(row["policy"])  # a resumed cycle keeps its own settings
        if progress and chosen.model_dump() != (policy or chosen).model_dump():
            progress("cycle", f"resuming cycle {row['number']} with the policy it started with")
        ctx = _Context(
            store,
            workload,
            chosen,
            row["id"],
            model_for or partial(_default_model_for, store),
            traffic,
            progress or (lambda stage, text: None),
        )
        done = _stage_rows(store, row["id"])
        for stage in STAGES:
            previous = done.get(stage)
            if previous and previous["status"] == "done":
                ctx.outputs[stage] = previous["outputs"]
                continue
            ctx.progress(stage, "started")
            _save_stage(store, row["id"], stage, status="running", started_at=utcnow(), error=None)
            try:
                outputs = _RUNNERS[stage](ctx)
            except _Wait as wait:
                _save_stage(store, row["id"], stage, status="waiting", error=str(wait))
                _finish(store, row["id"], "waiting", {"outcome": "waiting", "reason": str(wait)})
                return CycleRun(
                    row["id"], workload, row["number"], "waiting", "waiting", {"reason": str(wait)}
                )
            except BaseException as exc:
                _save_stage(store, row["id"], stage, status="failed", error=repr(exc), finished_at=utcnow())
                _finish(store, row["id"], "failed", {"outcome": "failed", "stage": stage, "error": repr(exc)})
                raise
            ctx.outputs[stage] = outputs
            _save_stage(store, row["id"], stage, status="done", outputs=outputs, finished_at=utcnow())
            ctx.progress(stage, "done")
        outcome = _outcome(ctx.outputs)
        result = {"outcome": outcome, "metrics": cycle_metrics(store, row["id"])}
        _finish(store, row["id"], "succeeded", result)
        return CycleRun(row["id"], workload, row["number"], "succeeded", outcome, result)


def abandon_cycle(store: Store, cycle_id_or_ref: str, *, actor: str = "cli") -> dict[str, Any]:
    """Give up an unfinished cycle (failed, waiting or crashed) so the next run starts
    a new one with the policy it is given; a cycle that holds its lock is left alone."""
    from flywheel.cycle.lock import lock_holder
    from flywheel.errors import Conflict

    cycle = get_cycle(store, cycle_id_or_ref)
    if cycle["status"] not in ("running", "waiting", "failed"):
        raise Conflict(f"cycle {cycle['workload']}#{cycle['number']} is {cycle['status']}, not unfinished")
    if cycle["status"] == "running" and lock_holder(store, f"cycle:{cycle['workload']}"):
        raise Conflict(
            f"cycle {cycle['workload']}#{cycle['number']} is running now",
            hint="wait for it, or for its lock's lease to run out if its process died",
        )
    with store._writing() as conn:
        conn.execute(
            update(t.cycles)
            .where(t.cycles.c.id == cycle["id"])
            .values(status="abandoned", finished_at=utcnow())
        )
        store._audit(conn, actor, "cycle.abandon", "cycle", cycle["id"], {"was": cycle["status"]})
    return get_cycle(store, cycle["id"])


def get_cycle(store: Store, cycle_id_or_ref: str) -> dict[str, Any]:
    """A cycle with its stages: by id, or ``WORKLOAD#N``."""
    from flywheel.errors import NotFound

    c = t.cycles.c
    query = select(t.cycles)
    workload, sep, number = cycle_id_or_ref.rpartition("#")
    if sep and number.isdigit():
        query = query.where(c.workload == workload, c.number == int(number))
    else:
        query = query.where(c.id == cycle_id_or_ref)
    with store.engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound(f"no cycle {cycle_id_or_ref!r}", hint="list them with 'flywheel cycle list'")
    cycle = dict(row)
    stages = sorted(_stage_rows(store, cycle["id"]).values(), key=lambda s: s["position"])
    cycle["stages"] = stages
    return cycle


def list_cycles(store: Store, workload: str | None = None) -> list[dict[str, Any]]:
    c = t.cycles.c
    query = select(t.cycles).order_by(c.workload, c.number)
    if workload:
        query = query.where(c.workload == workload)
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]
