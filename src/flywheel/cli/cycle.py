"""``flywheel cycle``: run, schedule and inspect flywheel cycles."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from flywheel.cli.common import console, open_store, print_json

cycle_app = typer.Typer(help="Flywheel cycles: run, schedule, list, show.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
PolicyFile = Annotated[
    Path | None, typer.Option("--policy", help="Cycle policy file (YAML or TOML); default: built-in.")
]


def _policy(path: Path | None) -> Any:
    from flywheel.cycle import CyclePolicy

    return CyclePolicy.load(path) if path else CyclePolicy()


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    metrics = row["result"].get("metrics", {})
    improvement = metrics.get("improvement") or {}
    return {
        "id": row["id"],
        "workload": row["workload"],
        "number": row["number"],
        "status": row["status"],
        "trigger": row["trigger"],
        "outcome": row["result"].get("outcome"),
        "started_at": row["started_at"].isoformat(),
        "cycle_seconds": metrics.get("cycle_seconds"),
        "bottleneck": metrics.get("bottleneck"),
        "signal_density": metrics.get("signal_density"),
        "accuracy": improvement.get("accuracy"),
        "ci95": improvement.get("ci95"),
        # the estimate the gate judged (absent from cycles recorded before it was kept)
        "estimate": improvement.get("estimate"),
        "gain": improvement.get("gain"),
        "gain_ci95": improvement.get("gain_ci95"),
        "refused_by": improvement.get("refused_by"),
        "served_version": metrics.get("served_version"),
    }


def _run_once(workload: str, policy: Any, trigger: str, json: bool) -> dict[str, Any]:
    from flywheel.cycle import get_cycle, run_cycle

    err = console(stderr=True)

    def progress(stage: str, text: str) -> None:
        if not json:
            err.print(f"[dim]{stage}:[/dim] {text}", highlight=False, markup=True)

    with open_store() as store:
        run = run_cycle(store, workload, policy, trigger=trigger, progress=progress)
        return _brief(get_cycle(store, run.id))


def run(
    workload: Annotated[str, typer.Option(help="The workload.")],
    policy: PolicyFile = None,
    json: Json = False,
) -> None:
    """Run one cycle (or resume the workload's unfinished one): curate, review, improve,
    evaluate, canary, watch, then promote or roll back."""
    brief = _run_once(workload, _policy(policy), "manual", json)
    if json:
        print_json(brief)
        return
    _print_brief(brief)


def _print_brief(b: dict[str, Any]) -> None:
    out = console()
    out.print(f"cycle {b['workload']}#{b['number']} {b['status']}: {b['outcome']}", highlight=False)
    if b["accuracy"]:
        (base, cand), (low, high) = b["accuracy"], b["ci95"]
        if b.get("gain") is not None and b.get("gain_ci95"):
            (jlow, jhigh), kind = b["gain_ci95"], b["estimate"]
            judged = f"gain judged ({kind}) {b['gain']:+.1%}, 95% CI [{jlow:+.1%}, {jhigh:+.1%}]"
            plain = f"; plain CI [{low:+.1%}, {high:+.1%}]" if kind != "plain" else ""
            out.print(f"held-out accuracy {base:.1%} -> {cand:.1%} ({judged}{plain})", highlight=False)
        else:
            out.print(f"held-out accuracy {base:.1%} -> {cand:.1%} (gain 95% CI [{low:+.1%}, {high:+.1%}])")
        if b.get("refused_by") and b["outcome"] == "gate_failed":
            out.print(f"refused by: {b['refused_by']}", highlight=False, markup=False)
    if b["cycle_seconds"] is not None:
        out.print(
            f"took {b['cycle_seconds']:.0f} s; bottleneck: {b['bottleneck']}; serving {b['served_version']}"
        )


cycle_app.command("run")(run)


@cycle_app.command("schedule")
def schedule(
    workload: Annotated[str, typer.Option(help="The workload.")],
    every: Annotated[
        float, typer.Option(min=0, help="Start a cycle every this many minutes (0: never).")
    ] = 60.0,
    min_new_tasks: Annotated[
        int, typer.Option(min=0, help="Also start one when this many new tasks arrived (0: off).")
    ] = 0,
    on_degradation: Annotated[
        bool, typer.Option(help="Also start one when degradation detection raises an alert.")
    ] = True,
    poll: Annotated[float, typer.Option(min=0.1, help="Seconds between checks.")] = 30.0,
    max_cycles: Annotated[int | None, typer.Option(min=1, help="Stop after this many cycles.")] = None,
    policy: PolicyFile = None,
    json: Json = False,
) -> None:
    """Run cycles on a schedule, on a volume of new signal, or on degradation, until stopped."""
    from flywheel.cycle.schedule import due

    chosen = _policy(policy)
    ran = 0
    last_start = 0.0
    err = console(stderr=True)
    while max_cycles is None or ran < max_cycles:
        with open_store() as store:
            trigger = due(
                store,
                workload,
                every_seconds=every * 60,
                last_start=last_start,
                min_new_tasks=min_new_tasks,
                on_degradation=on_degradation,
            )
        if trigger is None:
            time.sleep(poll)
            continue
        last_start = time.monotonic()
        if not json:
            err.print(f"starting a cycle of {workload} ({trigger})")
        brief = _run_once(workload, chosen, trigger, json)
        ran += 1
        if json:
            print_json(brief)
        else:
            _print_brief(brief)


@cycle_app.command("abandon")
def abandon(
    cycle: Annotated[str, typer.Argument(help="Cycle id or WORKLOAD#N.")], json: Json = False
) -> None:
    """Give up an unfinished cycle, so the next 'cycle run' starts anew (with its --policy)."""
    from flywheel.cycle.runner import abandon_cycle

    with open_store() as store:
        row = abandon_cycle(store, cycle)
    if json:
        print_json(_brief(row))
        return
    console().print(f"cycle {row['workload']}#{row['number']} abandoned")


@cycle_app.command("list")
def list_(
    workload: Annotated[str | None, typer.Option(help="Only this workload.")] = None, json: Json = False
) -> None:
    """Cycles, oldest first."""
    from flywheel.cycle import list_cycles

    with open_store() as store:
        rows = [_brief(r) for r in list_cycles(store, workload)]
    if json:
        print_json(rows)
        return
    table = Table("cycle", "status", "outcome", "trigger", "seconds", "bottleneck", "density", "accuracy")
    for r in rows:
        acc = r["accuracy"]
        table.add_row(
            f"{r['workload']}#{r['number']}",
            r["status"],
            r["outcome"] or "",
            r["trigger"],
            f"{r['cycle_seconds']:.0f}" if r["cycle_seconds"] is not None else "",
            r["bottleneck"] or "",
            f"{r['signal_density']:.0f}" if r["signal_density"] is not None else "",
            f"{acc[0]:.1%} -> {acc[1]:.1%}" if acc else "",
        )
    console().print(table)


@cycle_app.command("show")
def show(cycle: Annotated[str, typer.Argument(help="Cycle id or WORKLOAD#N.")], json: Json = False) -> None:
    """A cycle's stages with their timings, outputs and errors."""
    from flywheel.cycle import get_cycle

    with open_store() as store:
        row = get_cycle(store, cycle)
    if json:
        row["stages"] = [
            {
                **s,
                "started_at": s["started_at"].isoformat(),
                "finished_at": s["finished_at"] and s["finished_at"].isoformat(),
            }
            for s in row["stages"]
        ]
        row["started_at"] = row["started_at"].isoformat()
        row["finished_at"] = row["finished_at"] and row["finished_at"].isoformat()
        print_json(row)
        return
    _print_brief(_brief(row))
    table = Table("stage", "status", "seconds", "outputs / error")
    for s in row["stages"]:
        took = (s["finished_at"] - s["started_at"]).total_seconds() if s["finished_at"] else None
        summary = s["error"] or ", ".join(
            f"{k}={v}" for k, v in s["outputs"].items() if not isinstance(v, list | dict)
        )
        table.add_row(s["stage"], s["status"], f"{took:.1f}" if took is not None else "", summary[:100])
    console().print(table, markup=False, highlight=False)


def report(
    workload: Annotated[str, typer.Option(help="The workload.")],
    out: Annotated[Path, typer.Option(help="Folder to write index.html and the PNG charts into.")] = Path(
        "flywheel-report"
    ),
    png: Annotated[bool, typer.Option(help="Also write a PNG per chart.")] = True,
    json: Json = False,
) -> None:
    """The dashboard as a static HTML file (and PNG charts) for sharing; on the
    terminal, why the gate decided as it did on each candidate, and each
    version's offline accuracy beside its live completion and satisfaction."""
    from flywheel.cycle import list_cycles
    from flywheel.web.charts import dashboard_data
    from flywheel.web.report import write_report

    with open_store() as store:
        if not list_cycles(store, workload):
            from flywheel.errors import NotFound

            raise NotFound(f"workload {workload!r} has no cycle yet", hint="run 'flywheel cycle run' first")
        data = dashboard_data(store, workload)
        path = write_report(store, workload, out, png=png, data=data)
    files = sorted(str(p) for p in out.iterdir())
    if json:
        print_json(
            {
                "report": str(path),
                "files": files,
                "candidates": data["candidates"],
                "alignment": data["alignment"],
            }
        )
        return
    out_console = console()
    out_console.print(verdict_table(data["candidates"]))
    out_console.print(alignment_table(data["alignment"]))
    out_console.print(f"report: {path} ({len(files)} files in {out})")


def _pts(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}"


def _ci_pts(ci: list[float] | None) -> str:
    return "" if not ci or ci[0] is None else f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def _rate(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def verdict_table(candidates: list[dict[str, Any]], *, title: str | None = None) -> Table:
    """Per cycle and candidate: the estimate the gate judged (gains in points, with
    their 95% CIs), the plain one, the check that refused it, and its power."""
    table = Table(
        "cycle",
        "candidate",
        "gate",
        "gain judged [95% CI]",
        "plain gain [95% CI]",
        "refused by",
        "power",
        title=title or "why: the gate on each candidate (gains in points)",
    )
    for v in candidates:
        cells = (
            str(v["cycle"]),
            v.get("strategy") or v["version"],
            v["status"],
            f"{v['estimate']} {_pts(v['gain'])}{_ci_pts(v['ci95'])}",
            f"{_pts(v['plain_gain'])}{_ci_pts(v['plain_ci95'])}",
            v.get("refused_by") or "",
            v.get("power_text") or "",
        )
        table.add_row(*(Text(cell) for cell in cells))  # check texts are shown as written, never as markup
    return table


def alignment_table(rows: list[dict[str, Any]]) -> Table:
    """Per version: offline accuracy and gain over its parent beside live task
    completion and satisfaction, and whether the offline gain shows live."""
    table = Table(
        "version",
        "parent",
        "offline accuracy",
        "offline gain (pts)",
        "live tasks",
        "completion",
        "satisfaction",
        "offline vs live",
        title="offline vs live, per version",
    )
    for a in rows:
        offline, gain, live = a["offline"], a["offline_gain"], a["live"]
        verdict = Text(a["verdict"], style="bold red" if a["flagged"] else "")
        if a["detail"]:
            verdict.append("\n" + a["detail"], style="dim")
        cells = (
            f"#{a['number']} {a['strategy'] or ''}".strip(),
            f"#{a['parent_number']}" if a["parent_number"] else "",
            f"{offline['accuracy']:.1%} (n={offline['n']})" if offline else "-",
            f"{gain['estimate']} {_pts(gain['gain'])}{_ci_pts(gain['ci95'])}" if gain else "-",
            str(live["tasks"]),
            _rate(live["completion"], live["completion_ci95"]),
            _rate(live["satisfaction"], live["satisfaction_ci95"])
            + (f" n={live['rated']}" if live["rated"] else ""),
        )
        table.add_row(*(Text(cell) for cell in cells), verdict)
    return table
