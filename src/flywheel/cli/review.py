"""``flywheel review``: the review queue from the command line (the same actions
as the web pages)."""

from __future__ import annotations

import getpass
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from flywheel.cli.common import console, open_store, print_json, settings

review_app = typer.Typer(help="The human review queue: list items, act on them.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@review_app.command("list")
def list_(
    workload: Annotated[str | None, typer.Option(help="Only this workload.")] = None,
    state: Annotated[str, typer.Option(help="pending, approved, rejected or corrected.")] = "pending",
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    json: Json = False,
) -> None:
    """Review items, highest priority first."""
    with open_store() as store:
        items = store.review_queue(workload, state=state, limit=limit)
    if json:
        print_json(
            [
                {**i, "created_at": i["created_at"].isoformat(), "updated_at": i["updated_at"].isoformat()}
                for i in items
            ]
        )
        return
    table = Table("task", "workload", "priority", "rule", "reason")
    for i in items:
        table.add_row(i["task_id"], i["workload"], f"{i['priority']:.2f}", i["rule"], i["reason"][:80])
    console().print(table, markup=False, highlight=False)


@review_app.command("act")
def act(
    task_id: Annotated[str, typer.Argument(help="The task.")],
    action: Annotated[
        str,
        typer.Argument(
            help="approve, reject, correct_output, correct_tool_call, preference, adoption, "
            "knowledge_relevance or missing_knowledge."
        ),
    ],
    data: Annotated[
        str,
        typer.Option(
            help='The action\'s fields as JSON, e.g. \'{"tool_calls": [...]}\' or \'{"text": "..."}\'.'
        ),
    ] = "{}",
    reviewer: Annotated[str | None, typer.Option(help="Who reviews (default: your user name).")] = None,
    json: Json = False,
) -> None:
    """Apply one review action: stored as a label and an audit event."""
    from flywheel.ingest import Ingestor
    from flywheel.review import review

    try:
        fields: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="--data") from exc
    if not isinstance(fields, dict):
        raise typer.BadParameter("give a JSON object", param_hint="--data")
    who = reviewer or f"cli:{getpass.getuser()}"
    with open_store() as store:
        ingestor = Ingestor(store, settings())
        try:
            outcome = review(store, ingestor, task_id, action, fields, reviewer=who)
        finally:
            ingestor.close()
    if json:
        print_json(outcome.__dict__)
        return
    console().print(
        f"{action} on {task_id} saved as label {outcome.label_id} (state {outcome.state or 'unchanged'})"
    )
