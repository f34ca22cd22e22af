"""``flywheel improve``: a candidate version from a curated dataset."""

from __future__ import annotations

from typing import Annotated

import typer

from flywheel.cli.common import console, open_store, print_json


def improve(
    workload: Annotated[str, typer.Option(help="The workload.")],
    strategy: Annotated[
        str,
        typer.Option(
            help="few_shot, few_shot_per_request, prompt_rules, tool_policy, knowledge, lora or "
            "openai_fine_tune; combine with + (lora+prompt_rules: each builds on the one before)."
        ),
    ] = "few_shot",
    dataset: Annotated[str | None, typer.Option(help="Dataset version (default: the latest).")] = None,
    k: Annotated[int, typer.Option(min=1, max=16, help="Few-shot examples to choose.")] = 4,
    json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Build a candidate agent version from the current one and a dataset version."""
    from flywheel.deploy import deployment, get_version
    from flywheel.errors import InvalidInput
    from flywheel.improve import build_candidate, check_strategy

    try:
        check_strategy(strategy)
    except InvalidInput as exc:
        raise typer.BadParameter(f"{exc.message}; {exc.hint}", param_hint="--strategy") from None
    with open_store() as store:
        data_id = store.get_dataset(dataset or workload)["id"]
        current = deployment(store, workload)
        base = get_version(store, current["stable_version"]) if current else None
        say = console(stderr=True)
        candidate = build_candidate(
            store, workload, data_id, base, strategy, k=k, progress=lambda text: say.print(text, markup=False)
        )
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
