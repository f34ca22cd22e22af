"""``flywheel curate`` and ``flywheel datasets``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress
from rich.table import Table

from flywheel.cli.common import console, open_store, print_json

datasets_app = typer.Typer(help="Curated dataset versions: list, show, diff, export.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def curate(
    workload: Annotated[str, typer.Option(help="The workload to curate.")],
    rules: Annotated[
        Path | None, typer.Option(help="Rules file (YAML or TOML); default: the built-in rules.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Processes for the first pass (default: one a core, large runs)."),
    ] = None,
    json: Json = False,
) -> None:
    """Turn new traffic into a new immutable dataset version (incremental)."""
    from flywheel.curate import DEFAULT_RULES, load_rules, parse_rules
    from flywheel.curate import curate as run

    parsed = load_rules(rules) if rules else parse_rules(DEFAULT_RULES, name="default rules")
    with open_store() as store, Progress(console=console(stderr=True), disable=json, transient=True) as bar:
        job = bar.add_task(f"curating {workload}", total=None)
        result = run(
            store, workload, parsed, progress=lambda n: bar.update(job, completed=n), workers=workers
        )
    if json:
        print_json({"dataset": result.dataset_id, "number": result.number, **result.summary})
        return
    s = result.summary
    out = console()
    out.print(f"dataset [bold]{result.dataset_id}[/bold] (version {result.number} of {workload})")
    out.print(
        f"{s['tasks_processed']} tasks processed, {s['carried_over']} examples carried over; "
        f"{s['examples']} examples ({', '.join(f'{k} {v}' for k, v in sorted(s['splits'].items()))}); "
        f"{s['review_items']} sent to review"
    )
    out.print(f"signal density: {s['signal_density']['overall']} usable examples per 1,000 tasks")
    laps = s.get("seconds") or {}
    if laps:
        out.print("seconds: " + ", ".join(f"{phase} {value:.1f}" for phase, value in laps.items()))
    table = Table("rule", "tasks", "usable per 1,000 tasks")
    for rule, n in s["per_rule"].items():
        table.add_row(rule, str(n), str(s["signal_density"]["per_rule"].get(rule, 0)))
    out.print(table)


def _brief(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": d["id"],
        "workload": d["workload"],
        "number": d["number"],
        "parent": d["parent_id"],
        "created_at": d["created_at"].isoformat(),
        "examples": d["summary"].get("examples"),
        "splits": d["summary"].get("splits"),
        "signal_density": d["summary"].get("signal_density", {}).get("overall"),
    }


@datasets_app.command("list")
def list_(
    workload: Annotated[str | None, typer.Option(help="Only this workload.")] = None, json: Json = False
) -> None:
    """Dataset versions, oldest first."""
    with open_store() as store:
        rows = [_brief(d) for d in store.list_datasets(workload)]
    if json:
        print_json(rows)
        return
    table = Table("id", "workload", "#", "examples", "splits", "density", "created")
    for r in rows:
        splits = ", ".join(f"{k} {v}" for k, v in sorted((r["splits"] or {}).items()))
        table.add_row(
            r["id"],
            r["workload"],
            str(r["number"]),
            str(r["examples"]),
            splits,
            str(r["signal_density"]),
            r["created_at"][:19],
        )
    console().print(table)


@datasets_app.command("show")
def show(
    dataset: Annotated[str, typer.Argument(help="id, WORKLOAD@N or WORKLOAD (latest)")], json: Json = False
) -> None:
    """A version's summary, provenance and rules."""
    with open_store() as store:
        d = store.get_dataset(dataset)
        members = store.dataset_membership(d["id"])
    data = {
        **_brief(d),
        "summary": d["summary"],
        "rules": d["rules"],
        "rules_hash": d["rules_hash"],
        "members": len(members),
    }
    if json:
        print_json(data)
        return
    out = console()
    out.print(f"[bold]{d['id']}[/bold]  {d['workload']} version {d['number']}  parent {d['parent_id']}")
    out.print_json(data=d["summary"])
    out.print("rules:")
    out.print(d["rules"], markup=False, highlight=False)


@datasets_app.command("diff")
def diff(a: str, b: str, json: Json = False) -> None:
    """Examples added, removed and moved between splits from version A to B."""
    with open_store() as store:
        da, db = store.get_dataset(a), store.get_dataset(b)
        ma, mb = store.dataset_membership(da["id"]), store.dataset_membership(db["id"])
    added = sorted(set(mb) - set(ma))
    removed = sorted(set(ma) - set(mb))
    moved = sorted(k for k in set(ma) & set(mb) if ma[k][0] != mb[k][0])
    data = {
        "from": da["id"],
        "to": db["id"],
        "added": len(added),
        "removed": len(removed),
        "moved": len(moved),
        "rules_changed": da["rules_hash"] != db["rules_hash"],
        "added_ids": added[:50],
        "removed_ids": removed[:50],
    }
    if json:
        print_json(data)
        return
    console().print(
        f"{da['id']} -> {db['id']}: +{len(added)} -{len(removed)} examples, {len(moved)} moved between splits"
        + ("; the rules changed" if data["rules_changed"] else "")
    )


@datasets_app.command("export")
def export(
    dataset: Annotated[str, typer.Argument(help="id, WORKLOAD@N or WORKLOAD (latest)")],
    out: Annotated[Path, typer.Option("--out", help="File to write.")],
    format: Annotated[
        str, typer.Option("--format", help="openai-jsonl, dpo-jsonl or parquet.")
    ] = "openai-jsonl",
    split: Annotated[str | None, typer.Option(help="Only this split (train, eval, few_shot).")] = "train",
    json: Json = False,
) -> None:
    """Write a dataset version for fine-tuning or analysis.

    Examples the format cannot hold are skipped, and counted by reason; an export
    with nothing to write is an error that says why."""
    from flywheel.curate.export import export_dataset

    every = split in (None, "all")
    with open_store() as store:
        d = store.get_dataset(dataset)
        rows = store.dataset_examples(d["id"], None if every else split)
    name = f"{d['id']}" + ("" if every else f" (split {split})")
    result = export_dataset(rows, format, out, name=name)
    if json:
        print_json({"dataset": d["id"], "split": split, **result.summary()})
        return
    out_console = console()
    out_console.print(f"wrote {result.written} examples of {d['id']} ({split}) to {out} as {format}")
    if result.skipped:
        out_console.print(f"skipped {sum(result.skipped.values())} examples:")
        for reason, n in result.skipped.most_common():
            out_console.print(f"  {n}  {reason}")
    if result.empty_messages_dropped:
        out_console.print(f"left out {result.empty_messages_dropped} empty messages of the inputs")
