"""``flywheel simulate``: simulated production traffic on a workload (a simulator)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.progress import Progress
from rich.table import Table

from flywheel.cli.common import console, open_store, print_json, settings


def simulate(
    workload: Annotated[str, typer.Option(help="bfcl, or a JSONL file of workload items.")] = "bfcl",
    tasks: Annotated[int, typer.Option(min=1, help="Requests to serve.")] = 50,
    sessions: Annotated[int, typer.Option(min=1, help="Simulated user sessions.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the traffic and the users.")] = 0,
    categories: Annotated[
        str, typer.Option(help="BFCL categories, comma-separated.")
    ] = "simple_python,multiple,parallel,parallel_multiple,irrelevance",
    per_category: Annotated[int | None, typer.Option(help="Items drawn per category (default: all).")] = None,
    model: Annotated[
        str, typer.Option(help="Model when no version is deployed: local, openai:MODEL[@URL], replay.")
    ] = "local",
    teacher_error_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Wrong share of the replay teacher.")
    ] = 0.1,
    correction_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Share of failures users correct.")
    ] = 0.2,
    noise: Annotated[
        float, typer.Option(min=0, max=1, help="Share of reactions that contradict the truth.")
    ] = 0.05,
    name: Annotated[
        str | None, typer.Option(help="Workload name in the store (default: bfcl or the file's stem).")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """SIMULATED traffic: serve workload items with the deployed agent version and
    simulated users' reactions, all through the real SDK path."""
    from pathlib import Path

    import flywheel
    from flywheel.agents.simulate import SimulatedUsers
    from flywheel.agents.simulate import simulate as run
    from flywheel.errors import InvalidInput
    from flywheel.models.registry import load_model
    from flywheel.store.artefacts import is_ref
    from flywheel.workloads import load_categories
    from flywheel.workloads.bfcl import WorkloadItem, load_jsonl
    from flywheel.workloads.bfcl_multi import MultiTurnItem

    chosen = [c.strip() for c in categories.split(",") if c.strip()]
    items: list[WorkloadItem | MultiTurnItem] = []
    if workload == "bfcl":
        try:
            items = load_categories(chosen, per_category=per_category, seed=seed)
        except InvalidInput as exc:
            raise typer.BadParameter(f"{exc.message}; {exc.hint}", param_hint="--categories") from exc
        store_name = name or "bfcl"
    else:
        path = Path(workload)
        if not path.is_file():
            raise typer.BadParameter("give 'bfcl' or an existing JSONL file", param_hint="--workload")
        items = list(load_jsonl(path))
        store_name = name or path.stem
    answers = {item.question: item.reference_calls() for item in items if hasattr(item, "reference_calls")}

    stores: list[Any] = []  # opened only to read an adapter pinned as an artefact

    def model_for(config):  # type: ignore[no-untyped-def]
        if config.adapter and is_ref(config.adapter) and not stores:
            stores.append(open_store())
        return load_model(
            config.model,
            adapter=config.adapter,
            store=stores[0] if stores else None,
            replay_answers=answers,
            replay_error_rate=teacher_error_rate,
            seed=seed,
        )

    fw = flywheel.init(store_name, settings=settings())
    users = SimulatedUsers(correction_rate=correction_rate, noise=noise)
    with Progress(console=console(stderr=True), disable=json, transient=True) as bar:
        job = bar.add_task(f"simulated traffic on {store_name}", total=tasks)
        report = run(
            fw,
            items,
            model_for,
            tasks=tasks,
            sessions=sessions,
            seed=seed,
            users=users,
            default_model=model,
            progress=lambda n: bar.update(job, completed=n),
        )
    fw.flush(60)
    fw.close()
    data = report.as_dict()
    if json:
        print_json(data)
        return
    out = console()
    versions = ", ".join(data["versions"])
    out.print(
        f"[bold]simulated[/bold] {data['tasks']} tasks on {store_name}: "
        f"{data['correct']} correct ({data['accuracy']:.1%}); {data['feedback']} reactions, "
        f"{data['corrections']} corrections; versions {versions}"
    )
    table = Table("category", "correct", "tasks", title="by category (judged against ground truth)")
    for category, row in data["by_category"].items():
        table.add_row(category, str(row["correct"]), str(row["tasks"]))
    out.print(table)
    out.print(f"{data['seconds_per_task']:.2f} s and ${data['cost_per_task']:.6f} per task")
