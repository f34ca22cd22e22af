"""The ``flywheel`` command: a thin layer over the stages' functions.

Each command group is a module; errors become a message that says what to do
next and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import logging
import sys

import typer

from flywheel.cli import (
    curate,
    cycle,
    data,
    demo,
    deploy,
    evalset,
    evaluate,
    improve,
    keys,
    knowledge,
    review,
    seed,
    serve,
    simulate,
)
from flywheel.cli.common import console
from flywheel.errors import FlywheelError

__all__ = ["app", "main"]

app = typer.Typer(
    name="flywheel",
    help="data-flywheel: log your agent, curate its traffic, improve it, measure, repeat.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("serve")(serve.serve)
app.add_typer(serve.db_app, name="db")
app.add_typer(keys.app, name="keys")
app.add_typer(data.tasks_app, name="tasks")
app.command("stats")(data.stats)
app.command("import")(data.import_)
app.command("demo")(demo.demo)
app.command("example")(demo.example)
app.command("simulate")(simulate.simulate)
app.command("curate")(curate.curate)
app.add_typer(curate.datasets_app, name="datasets")
app.add_typer(deploy.versions_app, name="versions")
app.add_typer(deploy.deploy_app, name="deploy")
app.command("eval")(evaluate.eval_)
app.add_typer(evalset.evalset_app, name="evalset")
app.command("improve")(improve.improve)
app.add_typer(knowledge.knowledge_app, name="knowledge")
app.add_typer(cycle.cycle_app, name="cycle")
app.command("report")(cycle.report)
app.add_typer(review.review_app, name="review")
app.command("seed")(seed.seed)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except FlywheelError as exc:
        console(stderr=True).print(f"[red]error:[/red] {exc.message}", highlight=False)
        if exc.hint:
            console(stderr=True).print(f"[yellow]what to do:[/yellow] {exc.hint}", highlight=False)
        sys.exit(2 if exc.status < 500 else 1)
