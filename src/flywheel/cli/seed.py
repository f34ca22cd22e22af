"""``flywheel seed``: the cold start of a workload (``flywheel.curate.seed``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from flywheel.cli.common import console, open_store, print_json, settings


def seed(
    workload: Annotated[str, typer.Option(help="The workload to seed (its name in the store).")],
    teacher_model: Annotated[
        str,
        typer.Option(
            help="Who answers: a model of an OpenAI-compatible endpoint, or 'replay' "
            "(offline: the reference answers the inputs carry; labels marked simulated)."
        ),
    ],
    teacher_url: Annotated[
        str | None,
        typer.Option(help="Base URL of the teacher's OpenAI-compatible API (default: OpenAI's)."),
    ] = None,
    teacher_api_key: Annotated[
        str | None,
        typer.Option(envvar="FLYWHEEL_TEACHER_API_KEY", help="The teacher's API key.", show_default=False),
    ] = None,
    tasks: Annotated[
        Path | None,
        typer.Option(
            "--tasks",
            help='Inputs from a JSONL file: {"messages": [...], "tools": [...]} or {"question": ..., '
            '"tools": [...]} a line, optionally with "answer" and "intent".',
            dir_okay=False,
        ),
    ] = None,
    categories: Annotated[
        str | None,
        typer.Option(
            help="Inputs from BFCL single-turn categories, comma-separated (with reference answers)."
        ),
    ] = None,
    sample: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Inputs to seed, an even share per intent and tools (default: 200 of the logged "
            "tasks or BFCL categories, every line of a task file).",
        ),
    ] = None,
    seed_: Annotated[int, typer.Option("--seed", help="Seed of the sample.")] = 0,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Teacher requests at a time.")] = 4,
    json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Cold start: a teacher answers a sample of the workload's inputs; each answer is
    stored as a labelled task, and every one goes to review (a human confirms or
    corrects it). Seeding the same inputs again stores nothing twice."""
    from flywheel.curate.seed import (
        ModelTeacher,
        ReplayTeacher,
        Teacher,
        attach_bfcl_references,
        inputs_from_bfcl,
        read_task_file,
        sample_inputs,
        sample_logged_inputs,
        seed_workload,
    )
    from flywheel.errors import InvalidInput
    from flywheel.ingest import Ingestor
    from flywheel.review.budget import eval_coverage

    if not workload.strip():
        raise typer.BadParameter("give the workload's name", param_hint="--workload")
    if tasks is not None and categories is not None:
        raise typer.BadParameter("give --tasks or --categories, not both", param_hint="--tasks")
    replay = teacher_model == "replay"
    if replay and teacher_url:
        raise typer.BadParameter(
            "the replay teacher answers offline; drop --teacher-url", param_hint="--teacher-url"
        )
    teacher: Teacher
    if replay:
        teacher = ReplayTeacher()
    else:
        from flywheel.models.remote import OpenAIModel

        teacher = ModelTeacher(OpenAIModel(teacher_model, base_url=teacher_url, api_key=teacher_api_key))

    config = settings()
    with open_store() as store:
        if tasks is not None:
            inputs = sample_inputs(read_task_file(tasks), sample, seed=seed_)
            source = str(tasks)
        elif categories is not None:
            from flywheel.workloads.bfcl import load_bfcl

            chosen = [c.strip() for c in categories.split(",") if c.strip()]
            try:
                items = load_bfcl(chosen)
            except InvalidInput as exc:
                raise typer.BadParameter(f"{exc.message}; {exc.hint}", param_hint="--categories") from exc
            inputs = sample_inputs(inputs_from_bfcl(items), sample or 200, seed=seed_)
            source = f"BFCL {', '.join(chosen)}"
        else:
            inputs = sample_logged_inputs(store, workload, sample or 200, seed=seed_)
            if replay:
                inputs = attach_bfcl_references(inputs)
            source = f"logged tasks of {workload}"
        coverage = eval_coverage(store, workload)
        ingestor = Ingestor(store, config)
        try:
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console(stderr=True),
                disable=json,
                transient=True,
            ) as bar:
                job = bar.add_task(f"{escape(teacher.name)} answering", total=None)
                report = seed_workload(
                    store,
                    ingestor,
                    workload,
                    inputs,
                    teacher,
                    coverage=coverage,
                    concurrency=concurrency,
                    progress=lambda done, total: bar.update(job, completed=done, total=total),
                )
        finally:
            ingestor.close()
    data: dict[str, Any] = {"source": source, **report.as_dict()}
    if json:
        print_json(data)
        raise typer.Exit(1 if report.failed and not report.seeded and not report.already else 0)
    _render(data)


def _render(data: dict[str, Any]) -> None:
    out = console()
    label = "simulated labels" if data["label"] == "simulated" else "teacher labels, not human ones"
    out.print(
        f"[bold]seeded[/bold] {data['seeded']} tasks of {escape(data['workload'])} from "
        f"{escape(data['source'])}, answered by {escape(data['teacher'])} ({label}); "
        f"{data['already_seeded']} seeded before, {data['duplicate_inputs']} duplicate inputs, "
        f"{data['no_reference']} without a reference answer, {data['failed']} failed"
    )
    if data["strata"]:
        intents: dict[str, list[int]] = {}  # intent -> [tasks, strata]
        for stratum, n in data["strata"].items():
            row = intents.setdefault(stratum.rpartition("|")[0], [0, 0])
            row[0] += n
            row[1] += 1
        table = Table("intent", "tasks", "tool sets answered", title="seeded per intent")
        for intent, (n, strata) in sorted(intents.items()):
            table.add_row(escape(intent), str(n), str(strata))
        out.print(table)
    for failure in data["failures"][:10]:
        out.print(f"  [red]failed[/red] {escape(failure['origin'])}: {escape(failure['error'])}")
    if data["failed"] > 10:
        out.print(f"  ... and {data['failed'] - 10} more (--json lists them)")
    if data["failed"]:
        out.print("run the same command again to retry the failed inputs (nothing is stored twice)")
    workload = escape(data["workload"])
    out.print(
        f"{data['review_items']} review items added (review everything: a human confirms or corrects "
        f"each answer): flywheel review list --workload {workload}, or the review page under /ui/"
    )
    out.print(f"then: flywheel curate --workload {workload}, or flywheel cycle run --workload {workload}")
