"""The ``flywheel`` command: a thin layer over the stages' functions.

Each command group is a module; errors become a message that says what to do
next and a non-zero exit status, never a traceback. Exit statuses: 0 done;
1 failed (the database, the server, a setting, or problems found in the
input, e.g. ``import`` lines with errors); 2 the request cannot be done as
given (a bad option, argument or input, or one the current state refuses);
3 not found (a task, version, dataset... named does not exist).
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

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
from flywheel.errors import FlywheelError, NotFound

__all__ = ["EXIT_FAILED", "EXIT_NOT_FOUND", "EXIT_USAGE", "app", "exit_status", "main"]

EXIT_FAILED = 1
EXIT_USAGE = 2  # click's own status for a bad option or argument
EXIT_NOT_FOUND = 3

app = typer.Typer(
    name="flywheel",
    help="data-flywheel: log your agent, curate its traffic, improve it, measure, repeat.",
    epilog="Exit status: 0 done; 1 failed (database, server, settings, or problems found in "
    "the input); 2 usage (a bad option, argument or input, or a request the current state "
    "refuses); 3 not found (the task, version, dataset... named does not exist).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("data-flywheel")
        except PackageNotFoundError:  # running from a source tree that is not installed
            from flywheel import __version__ as number
        typer.echo(f"data-flywheel {number}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit."),
    ] = False,
) -> None:
    pass


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


def exit_status(exc: FlywheelError) -> int:
    """3 for a record not found, 2 for any other error of the request (bad
    input, a conflict with the current state), 1 for a failure (status 5xx)."""
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    return EXIT_USAGE if exc.status < 500 else EXIT_FAILED


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except FlywheelError as exc:
        console(stderr=True).print(f"[red]error:[/red] {exc.message}", highlight=False)
        if exc.hint:
            console(stderr=True).print(f"[yellow]what to do:[/yellow] {exc.hint}", highlight=False)
        sys.exit(exit_status(exc))
