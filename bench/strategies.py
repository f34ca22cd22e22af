"""What each Improve strategy buys, measured: AST accuracy on held-out BFCL items.

    python bench/strategies.py [--per-category 150] [--tasks 300] [--store PATH]

1. BFCL single-turn items are split (by a hash of their id) into a traffic
   pool and a held-out set that no strategy ever sees.
2. The base version (the zero-shot student) serves ``--tasks`` SIMULATED
   requests from the pool through the real SDK; simulated users correct 20%
   of the wrong answers (``--correction-rate``).
3. The traffic is curated with the default rules into a dataset.
4. Each strategy builds a candidate from that dataset; each candidate, the
   base and a combination are evaluated on the held-out set (the real
   student in llama.cpp), and compared to the base: accuracy with its Wilson
   95% CI, the gain with its paired-bootstrap 95% CI, build time.
5. The ceiling: LoRA on the ground truth of every item in the traffic pool
   (what a perfectly labelled train split would give).

Evaluations are cached per (version, item) in the store, so a rerun with the
same ``--store`` only computes what is new. Prints a table; JSON to
bench/results/strategies.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
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
    parser.add_argument("--categories", default="simple_python,multiple")
    parser.add_argument("--per-category", type=int, default=150)
    parser.add_argument("--held-out", type=float, default=0.35, help="share of items held out")
    parser.add_argument("--tasks", type=int, default=300, help="simulated requests served by the base")
    parser.add_argument("--correction-rate", type=float, default=0.2)
    parser.add_argument(
        "--strategies",
        default="few_shot,few_shot_per_request,prompt_rules,tool_policy,knowledge,lora",
    )
    parser.add_argument(
        "--combine", default="prompt_rules+lora,knowledge+lora", help="comma-separated a+b combinations"
    )
    parser.add_argument("--no-ceiling", action="store_true")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--store", type=Path, default=ROOT / "bench" / "results" / "strategies.db")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "strategies.json")
    args = parser.parse_args()

    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import flywheel
    from flywheel.agents.simulate import SimulatedUsers, simulate
    from flywheel.config import Settings
    from flywheel.curate import CONFIRMED_RULES, curate, parse_rules
    from flywheel.cycle.runner import ensure_baseline
    from flywheel.deploy import create_version, get_version
    from flywheel.errors import InvalidInput
    from flywheel.evaluate.offline import EvalItem, compare, evaluate_version, wilson_interval
    from flywheel.improve import build_candidate
    from flywheel.improve.lora import LoraSettings, TrainingExample, train_lora
    from flywheel.models.registry import load_model
    from flywheel.store import Store
    from flywheel.store.artefacts import put_artefact
    from flywheel.workloads.bfcl import load_bfcl

    started = time.perf_counter()
    args.store.parent.mkdir(parents=True, exist_ok=True)
    settings = Settings(database_url=f"sqlite:///{args.store}", home=args.store.parent / ".flywheel")
    store = Store.open(settings)
    workload = "bfcl-strategies"
    items = load_bfcl([c.strip() for c in args.categories.split(",")], limit=args.per_category, seed=7)
    pool = [i for i in items if not _held_out(i.id, args.held_out)]
    held = [
        EvalItem(i.id, i.category, i.messages, i.tools, i.expected)
        for i in items
        if _held_out(i.id, args.held_out)
    ]
    print(f"{len(items)} items: {len(pool)} in the traffic pool, {len(held)} held out", file=sys.stderr)

    def model_for(config: Any) -> Any:
        return load_model(config.model, adapter=config.adapter, store=store)

    base_id, _ = ensure_baseline(store, workload, {"model": "local", "max_tokens": 192}, actor="bench")
    base = get_version(store, base_id)
    served = store.stats(workload).get("tasks", 0)
    if served < args.tasks:
        fw = flywheel.init(workload, settings=settings)
        t0 = time.perf_counter()
        report = simulate(
            fw,
            pool,
            model_for,
            tasks=args.tasks - served,
            sessions=max(20, args.tasks // 5),
            users=SimulatedUsers(correction_rate=args.correction_rate),
            progress=lambda n: print(f"\rtraffic {n}/{args.tasks - served}", end="", file=sys.stderr),
        )
        fw.flush()
        fw.close()
        print(
            f"\ntraffic: {len(report.served)} tasks in {time.perf_counter() - t0:.0f} s, "
            f"{report.corrections} corrections",
            file=sys.stderr,
        )
    # The served student is weak (near 0% zero-shot): its answers that nobody
    # confirmed are not labels. These rules train on corrections and on answers
    # users approved; the built-in rules also take "quiet successes".
    rules = CONFIRMED_RULES
    dataset = curate(store, workload, parse_rules(rules)).dataset_id
    counts = {s: len(store.dataset_examples(dataset, s)) for s in ("train", "eval", "few_shot")}
    print(f"dataset {dataset}: {counts}", file=sys.stderr)

    results: dict[str, dict[str, Any]] = {}

    def evaluate(label: str, version: Any, build_seconds: float | None) -> None:
        t0 = time.perf_counter()

        def tick(n: int) -> None:
            print(f"\r{label}: {n}/{len(held)}", end="", file=sys.stderr)

        answers = evaluate_version(
            store, version, held, model_for, dataset_id=dataset, workers=1, progress=tick
        )
        results[label] = {
            "version": version.id if version else None,
            "answers": answers,
            "build_seconds": build_seconds,
            "eval_seconds": time.perf_counter() - t0,
        }
        right = sum(a.correct for a in answers.values())
        print(f"\r{label}: {right}/{len(held)} right", file=sys.stderr)

    evaluate("base", base, None)
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    combos = [c.strip() for c in args.combine.split(",") if c.strip()]
    for name in names + combos:
        t0 = time.perf_counter()
        try:
            candidate = build_candidate(
                store,
                workload,
                dataset,
                base,
                name,
                k=3,
                settings=LoraSettings(epochs=args.epochs),
                progress=lambda text: print(f"\r{text}", end="", file=sys.stderr),
            )
        except InvalidInput as exc:  # a strategy with nothing to build from is a row, not a crash
            print(f"{name}: no candidate ({exc.message})", file=sys.stderr)
            results[name] = {"error": exc.message}
            continue
        evaluate(name, candidate.version, time.perf_counter() - t0)
    if not args.no_ceiling:
        t0 = time.perf_counter()
        trained = train_lora(
            [TrainingExample(i.messages, i.tools, i.reference_calls()) for i in pool],
            LoraSettings(epochs=args.epochs),
        )
        ref = put_artefact(
            store, "lora-adapter", trained.adapter, {"ceiling": True, "examples": trained.examples}
        )
        version = create_version(
            store, workload, {**base.config, "adapter": ref}, parent_id=base.id, strategy="ceiling"
        )
        evaluate("ceiling (LoRA on all pool labels)", version, time.perf_counter() - t0)

    rows = []
    baseline = results["base"]["answers"]
    for label, data in results.items():
        if "answers" not in data:
            rows.append({"strategy": label, "error": data["error"]})
            continue
        answers = data["answers"]
        right = sum(a.correct for a in answers.values())
        low, high = wilson_interval(right, len(answers))
        row: dict[str, Any] = {
            "strategy": label,
            "version": data["version"],
            "items": len(answers),
            "accuracy": right / len(answers),
            "accuracy_ci95": [low, high],
            "build_seconds": data["build_seconds"],
            "eval_seconds": data["eval_seconds"],
            "seconds_per_task": sum(a.seconds for a in answers.values()) / len(answers),
        }
        if label != "base":
            comparison = compare(baseline, answers)
            row["gain"] = comparison["difference"]
            row["gain_ci95"] = comparison["ci95"]
        rows.append(row)
    ceiling = next((r for r in rows if r["strategy"].startswith("ceiling")), None)
    for row in rows:
        if ceiling and "accuracy" in row and ceiling["accuracy"]:
            row["share_of_ceiling"] = row["accuracy"] / ceiling["accuracy"]

    print(
        f"\n{'strategy':34} {'accuracy [95% CI]':>22} {'gain vs base [95% CI]':>26} {'build s':>8} {'s/task':>7} {'of ceiling':>10}"
    )
    for row in rows:
        if "error" in row:
            print(f"{row['strategy']:34} no candidate: {row['error'][:70]}")
            continue
        acc = f"{row['accuracy']:.1%} [{row['accuracy_ci95'][0]:.1%}, {row['accuracy_ci95'][1]:.1%}]"
        gain = (
            f"{row['gain'] * 100:+.1f} [{row['gain_ci95'][0] * 100:+.1f}, {row['gain_ci95'][1] * 100:+.1f}]"
            if "gain" in row
            else ""
        )
        build = f"{row['build_seconds']:.0f}" if row["build_seconds"] is not None else ""
        share = f"{row['share_of_ceiling']:.0%}" if "share_of_ceiling" in row else ""
        print(
            f"{row['strategy']:34} {acc:>22} {gain:>26} {build:>8} {row['seconds_per_task']:>7.2f} {share:>10}"
        )
    out = {
        "categories": args.categories,
        "items": len(items),
        "pool": len(pool),
        "held_out": len(held),
        "tasks": args.tasks,
        "correction_rate": args.correction_rate,
        "dataset": dataset,
        "dataset_counts": counts,
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"\nJSON: {args.out} ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
