"""``flywheel improve``: a candidate version from a curated dataset."""

from __future__ import annotations

from typing import Annotated

import typer

from flywheel.cli.common import console, open_store, print_json


def improve(
    workload: Annotated[str, typer.Option(help="The workload.")],
    strategy: Annotated[
        str,
        typer.Option(help="few_shot, few_shot_per_request, prompt_rules, tool_policy or openai_fine_tune."),
    ] = "few_shot",
    dataset: Annotated[str | None, typer.Option(help="Dataset version (default: the latest).")] = None,
    k: Annotated[int, typer.Option(min=1, max=16, help="Few-shot examples to choose.")] = 4,
    json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Build a candidate agent version from the current one and a dataset version."""
    from flywheel.deploy import deployment, get_version
    from flywheel.improve import STRATEGIES

    if strategy not in STRATEGIES:
        raise typer.BadParameter(f"choose one of {', '.join(STRATEGIES)}", param_hint="--strategy")
    with open_store() as store:
        data_id = store.get_dataset(dataset or workload)["id"]
        current = deployment(store, workload)
        base = get_version(store, current["stable_version"]) if current else None
        candidate = STRATEGIES[strategy](k=k).build(store, workload, data_id, base)
    v = candidate.version
    if json:
        print_json(
            {
                "version": v.id,
                "number": v.number,
                "parent": v.parent_id,
                "dataset": data_id,
                "strategy": strategy,
                "changes": candidate.changes,
            }
        )
        return
    out = console()
    out.print(f"candidate {workload}@{v.number} ({v.id}) from {data_id} by {strategy}:")
    for change in candidate.changes:
        out.print(f"  {change}", markup=False, highlight=False)
    out.print(f"next: flywheel eval --workload {workload} --candidate {workload}@{v.number}")
