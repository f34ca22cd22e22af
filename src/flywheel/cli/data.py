"""``flywheel tasks``, ``flywheel stats`` and ``flywheel import``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table

from flywheel.cli.common import console, open_store, print_json, settings
from flywheel.ingest import Ingestor
from flywheel.ingest.importers import FORMATS, import_file

tasks_app = typer.Typer(help="Browse logged tasks.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
_TIME_FORMATS = [
    "%Y-%m-%d",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%d %H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S.%f%z",
]


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    text = " ".join(text.split())
    return escape(text if len(text) <= width else text[: width - 1] + "…")


@tasks_app.command("list")
def list_tasks(
    workload: Annotated[str | None, typer.Option(help="Only this workload.")] = None,
    session: Annotated[str | None, typer.Option(help="Only this session id.")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Only failed tasks.")] = False,
    since: Annotated[
        datetime | None,
        typer.Option(
            help="Started at or after (ISO time, UTC unless it has an offset: 2026-05-01T09:00:00+05:00).",
            formats=_TIME_FORMATS,
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    cursor: Annotated[str | None, typer.Option(help="Next page (printed after a page).")] = None,
    json: Json = False,
) -> None:
    """The newest tasks first."""
    with open_store() as store:
        tasks, next_cursor = store.list_tasks(
            workload=workload,
            session_id=session,
            success=False if failed else None,
            since=since,
            limit=limit,
            cursor=cursor,
        )
    if json:
        print_json(
            {
                "tasks": [t.model_dump(mode="json", exclude={"steps"}) for t in tasks],
                "next_cursor": next_cursor,
            }
        )
        return
    table = Table("started", "task", "workload", "session", "outcome", "ms", "input")
    for t in tasks:
        outcome = {True: "[green]ok[/green]", False: "[red]failed[/red]", None: "…"}[t.success]
        table.add_row(
            t.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            t.id,
            escape(t.workload),
            escape(t.session_id),
            outcome,
            f"{t.duration_ms:.0f}" if t.duration_ms is not None else "",
            _short(t.input, 50),
        )
    console().print(table)
    if next_cursor:
        console().print(f"more: --cursor '{next_cursor}'")


@tasks_app.command("show")
def show_task(task_id: str, json: Json = False) -> None:
    """One task with every step, feedback and correction."""
    with open_store() as store:
        task = store.get_task(task_id)
    if json:
        print_json(task.model_dump(mode="json"))
        return
    out = console()
    outcome = {True: "succeeded", False: "failed", None: "no outcome yet"}[task.success]
    out.print(
        f"[bold]task {task.id}[/bold]  {escape(task.workload)}  session {escape(task.session_id)}  {outcome}"
    )
    out.print(f"input:  {_short(task.input, 200)}")
    table = Table("#", "kind", "name", "ms", "error", "detail")
    for step in task.steps:
        detail = (
            step.data.get("arguments")
            or step.data.get("query")
            or step.data.get("text")
            or step.data.get("path")
        )
        table.add_row(
            str(step.seq),
            step.kind,
            escape(step.name or ""),
            f"{step.latency_ms:.0f}" if step.latency_ms is not None else "",
            _short(step.error, 30),
            _short(detail, 60),
        )
    out.print(table)
    out.print(f"output: {_short(task.output, 200)}")
    if task.confidence is not None:
        out.print(f"confidence: {task.confidence}")
    for fb in task.feedback:
        signals = {k: v for k, v in fb.items() if v not in (None, False) and k not in ("id", "task_id", "at")}
        out.print(f"feedback: {_short(signals, 120)}")
    for c in task.corrections:
        out.print(f"correction by {escape(c['author'])}: {_short(c['output'] or c['tool_calls'], 120)}")


def stats(
    workload: Annotated[str | None, typer.Option(help="Only this workload.")] = None,
    json: Json = False,
) -> None:
    """Counts per workload: tasks, outcomes, steps, human signals."""
    with open_store() as store:
        data = store.stats(workload)
    if json:
        print_json(data)
        return
    render_stats(data)


def render_stats(data: dict[str, Any]) -> None:
    table = Table("workload", "tasks", "finished", "success", "avg ms", "sessions", title="tasks")
    for w in data["workloads"]:
        rate = f"{w['success_rate']:.1%}" if w["success_rate"] is not None else ""
        avg = f"{w['avg_duration_ms']:.0f}" if w["avg_duration_ms"] is not None else ""
        table.add_row(
            escape(w["workload"]), str(w["tasks"]), str(w["finished"]), rate, avg, str(w["sessions"])
        )
    out = console()
    out.print(table)
    steps = ", ".join(f"{kind} {n}" for kind, n in data["steps"].items()) or "none"
    out.print(f"steps: {steps}")
    out.print(
        f"feedback {data['feedback']}, corrections {data['corrections']}, annotations {data['annotations']}"
    )


def import_(
    file: Annotated[Path, typer.Argument(help="The file to import.", exists=True, dir_okay=False)],
    format: Annotated[str, typer.Option("--format", help=f"One of {', '.join(FORMATS)}.")] = "openai-jsonl",
    workload: Annotated[str | None, typer.Option(help="Workload for lines that name none.")] = None,
    json: Json = False,
) -> None:
    """Import existing logs (chat-completion JSONL, OTLP/JSON). Re-importing stores nothing twice."""
    if format not in FORMATS:
        raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--format")
    config = settings()
    size = file.stat().st_size
    with (
        open_store() as store,
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=console(stderr=True),
            disable=json,
            transient=True,
        ) as bar,
    ):
        job = bar.add_task(f"importing {file.name}", total=size)
        report = import_file(
            Ingestor(store, config),
            file,
            format,  # type: ignore[arg-type]  # one of FORMATS, checked above
            workload=workload,
            progress=lambda done: bar.update(job, completed=done),  # type: ignore[arg-type]
        )
    if json:
        print_json(report.as_dict())
        raise typer.Exit(1 if report.errors else 0)
    out = console()
    out.print(
        f"{report.lines} lines, {report.tasks} tasks: {report.stored} events stored, "
        f"{report.duplicates} already there, {len(report.errors)} lines with errors"
    )
    if report.unpriced_calls:
        out.print(
            f"{report.unpriced_calls} model calls have no cost: their model has no price "
            "(add it to the file named by FLYWHEEL_PRICES)"
        )
    for error in report.errors[:20]:
        out.print(f"  line {error['line']}: {escape(error['field'])}: {escape(error['message'])}")
    if len(report.errors) > 20:
        out.print(f"  ... and {len(report.errors) - 20} more (use --json to see all)")
    if report.errors:
        raise typer.Exit(1)
