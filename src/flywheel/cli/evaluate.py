"""``flywheel eval``: a candidate version against the current one on held-out data."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import Progress, TaskID
from rich.table import Table

from flywheel.cli.common import console, open_store, print_json


def eval_(
    workload: Annotated[str, typer.Option(help="The workload.")],
    candidate: Annotated[str, typer.Option(help="Candidate version: id or WORKLOAD@N.")],
    baseline: Annotated[
        str | None, typer.Option(help="Baseline version (default: the stable one, else the base config).")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Dataset whose eval split is used (default: the latest).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Items answered in parallel.")] = 2,
    min_improvement: Annotated[
        float, typer.Option(help="The gain's CI lower bound must exceed this to pass.")
    ] = 0.0,
    judge: Annotated[
        str | None, typer.Option(help="Also score answers with an LLM judge: openai:MODEL[@BASE_URL].")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Paired evaluation with a 95% CI and McNemar's test, then the promotion gate's verdict."""
    from flywheel.deploy import deployment, get_version
    from flywheel.errors import ConfigError
    from flywheel.evaluate.offline import (
        ORIGINS,
        GatePolicy,
        compare,
        compare_judged,
        eval_items,
        evaluate_version,
        feedback_accuracy,
        gate,
        intents,
        judge_scores,
        label_origins,
        record_evaluation,
    )
    from flywheel.models.registry import load_model

    with open_store() as store:
        data_id = store.get_dataset(dataset or workload)["id"]
        items = eval_items(store, data_id)
        cand = get_version(store, candidate)
        current = deployment(store, workload)
        base = (
            get_version(store, baseline)
            if baseline
            else (get_version(store, current["stable_version"]) if current else None)
        )
        for version in (cand, base):
            if version is not None and version.workload != workload:
                raise typer.BadParameter(f"version {version.id} belongs to workload {version.workload!r}")

        def model_for(config):  # type: ignore[no-untyped-def]
            return load_model(config.model, adapter=config.adapter, store=store)

        results = {}
        with Progress(console=console(stderr=True), disable=json, transient=True) as bar:
            for label, version in (("baseline", base), ("candidate", cand)):
                job = bar.add_task(f"{label} on {len(items)} held-out items", total=len(items))

                def advance(n: int, job: TaskID = job) -> None:
                    bar.update(job, completed=n)

                results[label] = evaluate_version(
                    store,
                    version,
                    items,
                    model_for,
                    dataset_id=data_id,
                    workers=workers,
                    progress=advance,
                )
        try:
            intent_of = intents(items)
        except ConfigError:  # no local embedding model: per-tool breakdown only
            intent_of = None
        comparison = compare(
            results["baseline"],
            results["candidate"],
            intent_of=intent_of,
            origin_of=label_origins(store, items, base.id if base else None),
            baseline_ratings=feedback_accuracy(store, base.id if base else None),
        )
        decision = gate(comparison, GatePolicy(min_improvement=min_improvement))
        if judge:
            judge_model = load_model(judge)
            scores = {
                label: judge_scores(
                    store, version.id if version else "base", items, results[label], judge_model
                )
                for label, version in (("baseline", base), ("candidate", cand))
            }
            comparison["judge"] = compare_judged(scores["baseline"], scores["candidate"], judge_model.name)
        baseline_id = base.id if base else "base"
        result = {
            "dataset": data_id,
            "baseline_version": baseline_id,
            "candidate_version": cand.id,
            **comparison,
            "gate": decision,
        }
        result["evaluation"] = record_evaluation(store, workload, data_id, baseline_id, cand.id, result)
    if json:
        print_json(result)
        return
    out = console()
    b, c = comparison["baseline"], comparison["candidate"]
    table = Table(
        "metric", "baseline", "candidate", title=f"{comparison['items']} held-out items of {data_id}"
    )
    table.add_row("accuracy", f"{b['accuracy']:.1%}", f"{c['accuracy']:.1%}")
    table.add_row("error rate (failed calls)", f"{b['error_rate']:.1%}", f"{c['error_rate']:.1%}")
    table.add_row("unusable answers", f"{b['malformed_rate']:.1%}", f"{c['malformed_rate']:.1%}")
    table.add_row("seconds / task", f"{b['seconds_per_task']:.2f}", f"{c['seconds_per_task']:.2f}")
    table.add_row("tokens / task", f"{b['tokens_per_task']:.0f}", f"{c['tokens_per_task']:.0f}")
    out.print(table)
    low, high = comparison["ci95"]
    out.print(
        f"difference {comparison['difference']:+.1%}, 95% CI [{low:+.1%}, {high:+.1%}], "
        f"McNemar p = {comparison['mcnemar_p']:.3g}"
    )
    for origin, row in comparison["per_origin"].items():
        out.print(
            f"  {row['n']} items from {ORIGINS.get(origin, origin)}: "
            f"baseline {row['baseline']}, candidate {row['candidate']} right"
        )
    if comparison["reweighted"]:
        w = comparison["reweighted"]
        low, high = w["ci95"]
        out.print(
            f"  reweighted to the baseline's traffic (right on {w['baseline_traffic_accuracy']:.0%} of it, "
            f"by {w['ratings']['up']} up- and {w['ratings']['down']} down-rated tasks): "
            f"difference {w['difference']:+.1%}, 95% CI [{low:+.1%}, {high:+.1%}]"
        )
    for check in decision["checks"]:
        out.print(f"  {'pass' if check['passed'] else 'FAIL'}  {check['check']}")
    out.print("[green]promote[/green]" if decision["promote"] else "[yellow]do not promote[/yellow]")
