"""``flywheel demo``: the main job on the embedded store."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import Progress

from flywheel.cli.common import console, open_store, print_json, settings
from flywheel.cli.data import render_stats


def demo(
    tasks: Annotated[int, typer.Option(min=1, help="Requests the example agent serves.")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed of the simulated traffic.")] = 0,
    json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Run the built-in example agent through the SDK into the embedded store, then show the stats."""
    import flywheel
    from flywheel.agents.example import run_example_agent

    config = settings()
    fw = flywheel.init(workload="support-triage", settings=config.model_copy(update={"url": None}))
    with Progress(console=console(stderr=True), disable=json, transient=True) as bar:
        job = bar.add_task("example agent serving requests", total=tasks)
        run = run_example_agent(fw, tasks=tasks, seed=seed, progress=lambda n: bar.update(job, completed=n))
    delivered = fw.flush(timeout=60)
    counts = fw.stats()
    fw.close()
    with open_store() as store:
        data = store.stats("support-triage")
    if json:
        print_json(
            {
                "tasks": run.tasks,
                "succeeded": run.succeeded,
                "delivered": delivered,
                "sdk": counts,
                "stats": data,
            }
        )
        return
    out = console()
    out.print(
        f"the example agent served {run.tasks} requests ({run.succeeded} solved); "
        f"the SDK logged {counts['logged']} events into {config.database_url}"
    )
    render_stats(data)
    out.print("next: 'flywheel tasks list --failed', 'flywheel tasks show ID', 'flywheel serve'")
