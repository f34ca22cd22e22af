"""The project's goal, measured: automated cycles against a ceiling.

    python bench/cycles.py [--cycles 3] [--tasks 200] [--strategies prompt_rules+lora]

1. BFCL items (any single- or multi-turn categories) are split as in
   bench/strategies.py (a hash of the item id): a traffic pool, and held-out
   items no cycle ever sees. A single-turn item is right when its calls pass
   BFCL's AST check; a multi-turn conversation when, after every turn, the
   APIs it touched are in the state the ground truth leaves them in (it is
   served, for measuring, under a separate workload, WORKLOAD-heldout).
2. Each cycle, the version being served answers ``--tasks`` SIMULATED
   requests from the pool through the real SDK; simulated users correct
   ``--correction-rate`` (20%) of the wrong answers. Then ``run_cycle`` does
   the rest unattended: curate (the built-in rules without "quiet
   successes"), improve (the policy's strategies), evaluate on the dataset's
   eval split against the gate, canary, watch, promote or roll back.
3. First, the ceiling is measured on the held-out BFCL items (AST accuracy,
   Wilson 95% CI): LoRA on the ground truth of every single-turn pool item
   (what perfect labels would give; not measured for multi-turn categories).
   After each cycle, so is the version then serving.

A candidate that the gate turned down is measured on the held-out items as
well (``turned_down`` in the JSON, a line under the table): was it the
candidate that fell short, or the gate on a small eval split?

Prints a table (held-out accuracy per cycle, share of the ceiling, cycle
time without the watch and its bottleneck stage); JSON to
bench/results/cycles.json. Evaluations are cached per (version, item) in
``--store``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def _held_out(item_id: str, share: float) -> bool:
    return int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=200, help="simulated requests before each cycle")
    parser.add_argument("--categories", default="simple_python,multiple")
    parser.add_argument("--per-category", type=int, default=150)
    parser.add_argument("--held-out", type=float, default=0.35)
    parser.add_argument("--correction-rate", type=float, default=0.2)
    parser.add_argument("--strategies", default="prompt_rules+lora", help="comma-separated; a+b combines")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--no-ceiling", action="store_true")
    parser.add_argument("--store", type=Path, default=ROOT / "bench" / "results" / "cycles.db")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cycles.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import flywheel
    from flywheel.agents.simulate import SimulatedUsers, serve, simulate
    from flywheel.agents.tool_agent import AgentConfig, ToolAgent
    from flywheel.config import Settings
    from flywheel.curate import CONFIRMED_RULES
    from flywheel.cycle import CyclePolicy, get_cycle, run_cycle
    from flywheel.cycle.runner import GateSettings, ensure_baseline
    from flywheel.deploy import create_version, get_version
    from flywheel.evaluate.offline import EvalItem, evaluate_version, wilson_interval
    from flywheel.improve.lora import LoraSettings, TrainingExample, train_lora
    from flywheel.models.registry import load_model
    from flywheel.store import Store
    from flywheel.store.artefacts import put_artefact
    from flywheel.workloads import load_categories
    from flywheel.workloads.bfcl_multi import MultiTurnItem

    started = time.perf_counter()
    args.store.parent.mkdir(parents=True, exist_ok=True)
    settings = Settings(database_url=f"sqlite:///{args.store}", home=args.store.parent / ".flywheel-cycles")
    store = Store.open(settings)
    workload = "bfcl-cycles"
    items = load_categories(
        [c.strip() for c in args.categories.split(",") if c.strip()], per_category=args.per_category, seed=7
    )
    pool = [i for i in items if not _held_out(i.id, args.held_out)]
    held_items = [i for i in items if _held_out(i.id, args.held_out)]
    held = [
        EvalItem(i.id, i.category, i.messages, i.tools, i.expected)
        for i in held_items
        if not isinstance(i, MultiTurnItem)
    ]
    conversations = [i for i in held_items if isinstance(i, MultiTurnItem)]
    print(f"{len(items)} items: {len(pool)} in the traffic pool, {len(held_items)} held out", file=sys.stderr)

    def model_for(config: Any) -> Any:
        return load_model(config.model, adapter=config.adapter, store=store)

    rules = args.store.parent / "cycles-rules.yaml"
    rules.write_text(
        CONFIRMED_RULES.replace("splits: {eval: 0.2, few_shot: 0.1", "splits: {eval: 0.3, few_shot: 0.1")
    )
    policy = CyclePolicy(
        rules=str(rules),
        base_config={"model": "local", "max_tokens": 192},
        gate=GateSettings(max_seconds_per_task=8.0, max_cost_per_task=0.0005, max_error_rate_increase=0.05),
        strategies=[s.strip() for s in args.strategies.split(",") if s.strip()],
        few_shot_k=3,
        min_eval_items=10,
        canary_share=0.3,
        watch_min_tasks=15,
        watch_seconds=600,
    )
    base_id, _ = ensure_baseline(store, workload, policy.base_config, actor="bench")
    fw = flywheel.init(workload, settings=settings)
    users = SimulatedUsers(correction_rate=args.correction_rate)

    # Held-out conversations are served for real (the environment executes the
    # calls), logged under their own workload so that no cycle ever sees them.
    judge = flywheel.init(f"{workload}-heldout", settings=settings) if conversations else None

    def held_out_accuracy(version: Any, label: str) -> dict[str, Any]:
        answers = (
            evaluate_version(
                store,
                version,
                held,
                model_for,
                dataset_id="held-out",
                workers=1,
                progress=lambda n: print(f"\r{label}: {n}/{len(held_items)}", end="", file=sys.stderr),
            )
            if held
            else {}
        )
        right = sum(a.correct for a in answers.values())
        if judge is not None:
            config = AgentConfig.from_version(version, model="local", artefacts=judge.artefact)
            agent = ToolAgent(model_for(config), config)
            for k, item in enumerate(conversations):
                right += serve(judge, agent, item, f"held-out-{label}-{k}").correct
                print(f"\r{label}: {len(held) + k + 1}/{len(held_items)}", end="", file=sys.stderr)
            judge.flush(60)
        low, high = wilson_interval(right, len(held_items))
        print(f"\r{label}: {right}/{len(held_items)} right", file=sys.stderr)
        return {
            "version": version.id if version else None,
            "accuracy": right / len(held_items),
            "ci95": [low, high],
        }

    ceiling = None
    single = [i for i in pool if not isinstance(i, MultiTurnItem)]
    if not args.no_ceiling and (conversations or not single):
        print("no ceiling: it is measured for single-turn categories only", file=sys.stderr)
    elif not args.no_ceiling:
        t0 = time.perf_counter()
        trained = train_lora(
            [TrainingExample(i.messages, i.tools, i.reference_calls()) for i in single],
            LoraSettings(epochs=args.epochs),
        )
        ref = put_artefact(
            store, "lora-adapter", trained.adapter, {"ceiling": True, "examples": trained.examples}
        )
        base = get_version(store, base_id)
        version = create_version(
            store, workload, {**base.config, "adapter": ref}, parent_id=base.id, strategy="ceiling"
        )
        ceiling = {**held_out_accuracy(version, "ceiling"), "train_seconds": round(time.perf_counter() - t0)}
    rows: list[dict[str, Any]] = [
        {"cycle": 0, "outcome": "base", **held_out_accuracy(get_version(store, base_id), "base")}
    ]
    corrections = 0
    for n in range(args.cycles):
        t0 = time.perf_counter()
        report = simulate(
            fw,
            pool,
            model_for,
            tasks=args.tasks,
            sessions=max(20, args.tasks // 5),
            seed=1000 + n,
            users=users,
            progress=lambda k, n=n: print(
                f"\rcycle {n + 1}: traffic {k}/{args.tasks}", end="", file=sys.stderr
            ),
        )
        fw.flush(60)
        corrections += report.corrections
        traffic_seconds = time.perf_counter() - t0

        def traffic(want: int, n: int = n) -> None:  # the watch: live traffic keeps coming
            simulate(
                fw, pool, model_for, tasks=max(10, want), sessions=max(10, want), seed=5000 + n, users=users
            )
            fw.flush(60)

        run = run_cycle(
            store,
            workload,
            policy,
            model_for=model_for,
            traffic=traffic,
            progress=lambda stage, text, n=n: print(
                f"\rcycle {n + 1} · {stage}: {text[:90]:90}", end="", file=sys.stderr
            ),
        )
        cycle = get_cycle(store, run.id)
        metrics = cycle["result"].get("metrics", {})
        stages = {k: v for k, v in (metrics.get("stage_seconds") or {}).items() if k != "watch"}
        served = metrics.get("served_version") or rows[-1]["version"]
        row = {
            "cycle": n + 1,
            "outcome": cycle["result"].get("outcome"),
            "corrections_so_far": corrections,
            "traffic_seconds": round(traffic_seconds),
            "cycle_seconds_without_watch": round(sum(stages.values())),
            "bottleneck": max(stages, key=lambda s: stages[s]) if stages else None,
            "stage_seconds": {k: round(v) for k, v in stages.items()},
            **held_out_accuracy(get_version(store, served), f"cycle {n + 1}"),
        }
        # A candidate the gate turned down, measured on the held-out items too: was it
        # the candidate that fell short, or the gate on a small eval split?
        outputs = {s["stage"]: s["outputs"] or {} for s in cycle["stages"]}
        evaluated = outputs.get("evaluate", {})
        row["eval_items"] = evaluated.get("items")  # the standing set the gate judged on
        row["labels_needed"] = evaluated.get("labels_needed")
        row["why"] = evaluated.get("reason") or None
        row["gate"] = [  # what the gate saw: the plain paired difference and the reweighted one
            {
                "strategy": ev["strategy"],
                "promote": ev["promote"],
                "eval_split": [ev["candidate"]["accuracy"], ev["baseline"]["accuracy"]],
                "difference": [ev["difference"], *ev["ci95"]],
                "mcnemar_p": ev.get("mcnemar_p"),
                "reweighted": ev.get("reweighted"),
                "per_origin": ev.get("per_origin"),
            }
            for ev in evaluated.get("evaluations", [])
        ]
        for ev in evaluated.get("evaluations", []) if row["outcome"] != "promoted" else []:
            turned_down = held_out_accuracy(get_version(store, ev["version"]), f"cycle {n + 1} candidate")
            row.setdefault("turned_down", []).append(
                {
                    "strategy": ev["strategy"],
                    "eval_split": [ev["candidate"]["accuracy"], ev["baseline"]["accuracy"]],
                    **turned_down,
                }
            )
        print(f"\ncycle {n + 1}: {row}", file=sys.stderr)
        rows.append(row)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        # what is done so far survives a stop
        args.out.write_text(json.dumps({"rows": rows, "ceiling": ceiling}, indent=2))
    fw.close()
    if judge is not None:
        judge.close()

    print(
        f"\n{'cycle':>5} {'outcome':28} {'held-out accuracy [95% CI]':>28} {'of ceiling':>10} "
        f"{'labels':>7} {'eval set':>8} {'cycle s':>8} {'bottleneck':>12}"
    )
    for row in rows:
        acc = f"{row['accuracy']:.1%} [{row['ci95'][0]:.1%}, {row['ci95'][1]:.1%}]"
        share = f"{row['accuracy'] / ceiling['accuracy']:.0%}" if ceiling and ceiling["accuracy"] else ""
        took = str(row.get("cycle_seconds_without_watch", ""))
        labels = str(row.get("corrections_so_far", ""))
        size = str(row.get("eval_items") or "")
        print(
            f"{row['cycle']:>5} {str(row['outcome'])[:28]:28} {acc:>28} {share:>10} {labels:>7} {size:>8} "
            f"{took:>8} {str(row.get('bottleneck') or ''):>12}"
        )
        if row.get("stage_seconds"):
            print(f"{'':>5}   stages (s): {row['stage_seconds']}")
        if row.get("why") and row.get("outcome") != "promoted":
            print(f"{'':>5}   why: {row['why']}")
        for seen in row.get("gate", []):
            weighted = seen["reweighted"]
            reweighted = (
                f"; reweighted {weighted['difference']:+.1%} [{weighted['ci95'][0]:+.1%}, {weighted['ci95'][1]:+.1%}] "
                f"(serving version right on {weighted['baseline_traffic_accuracy']:.0%} by its ratings)"
                if weighted
                else ""
            )
            d, low, high = seen["difference"]
            exact = f", McNemar p = {seen['mcnemar_p']:.3f}" if seen.get("mcnemar_p") is not None else ""
            print(
                f"{'':>5}   gate on {seen['strategy']}: {seen['eval_split'][0]:.1%} vs {seen['eval_split'][1]:.1%} "
                f"on the standing set, {d:+.1%} [{low:+.1%}, {high:+.1%}]{exact}{reweighted}"
            )
        for other in row.get("turned_down", []):
            print(
                f"{'':>5}   turned down: {other['strategy']} at {other['accuracy']:.1%} held-out "
                f"[{other['ci95'][0]:.1%}, {other['ci95'][1]:.1%}]; on the eval split "
                f"{other['eval_split'][0]:.1%} vs {other['eval_split'][1]:.1%}"
            )
    if ceiling:
        print(
            f"ceiling (LoRA on all {len(pool)} pool labels): {ceiling['accuracy']:.1%} [{ceiling['ci95'][0]:.1%}, {ceiling['ci95'][1]:.1%}]"
        )
    out = {
        "categories": args.categories,
        "pool": len(pool),
        "held_out": len(held),
        "tasks_per_cycle": args.tasks,
        "correction_rate": args.correction_rate,
        "strategies": policy.strategies,
        "rows": rows,
        "ceiling": ceiling,
        "seconds": round(time.perf_counter() - started),
    }
    args.out.write_text(json.dumps(out, indent=2))
    print(f"JSON: {args.out} ({out['seconds']} s)")


if __name__ == "__main__":
    main()
