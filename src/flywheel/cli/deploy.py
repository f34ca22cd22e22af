"""``flywheel versions`` and ``flywheel deploy``."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from flywheel.cli.common import console, open_store, print_json

versions_app = typer.Typer(help="Agent versions: create, list, show, diff.", no_args_is_help=True)
deploy_app = typer.Typer(
    help="Which version serves a workload: status, canary, promote, rollback.", no_args_is_help=True
)

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _version(v: Any) -> dict[str, Any]:
    return {
        "id": v.id,
        "workload": v.workload,
        "number": v.number,
        "parent": v.parent_id,
        "strategy": v.strategy,
        "dataset": v.dataset_id,
        "created_at": v.created_at.isoformat(),
        "config": v.config,
    }


@versions_app.command("create")
def create(
    workload: Annotated[str, typer.Option(help="The workload.")],
    config: Annotated[Path, typer.Option(help="A JSON file with the agent config.")],
    parent: Annotated[str | None, typer.Option(help="The version this one derives from.")] = None,
    json: Json = False,
) -> None:
    """Create (or find) the version of a config: the same bundle is the same version."""
    from flywheel.deploy import create_version

    try:
        data = jsonlib.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(
            f"cannot read a JSON object from {config}: {exc}", param_hint="--config"
        ) from exc
    with open_store() as store:
        version = create_version(store, workload, data, parent_id=parent, strategy="manual")
    if json:
        print_json(_version(version))
    else:
        console().print(f"version {version.workload}@{version.number} ({version.id})")


@versions_app.command("list")
def list_(workload: Annotated[str, typer.Option(help="The workload.")], json: Json = False) -> None:
    """A workload's versions, oldest first."""
    from flywheel.deploy import deployment, list_versions

    with open_store() as store:
        versions = list_versions(store, workload)
        current = deployment(store, workload) or {}
    if json:
        print_json([_version(v) for v in versions])
        return
    table = Table("#", "id", "strategy", "parent", "dataset", "serving", "created")
    for v in versions:
        serving = (
            "stable"
            if v.id == current.get("stable_version")
            else f"canary {current.get('canary_share', 0):.0%}"
            if v.id == current.get("canary_version")
            else ""
        )
        table.add_row(
            str(v.number),
            v.id,
            v.strategy or "",
            v.parent_id or "",
            v.dataset_id or "",
            serving,
            v.created_at.isoformat()[:19],
        )
    console().print(table)


@versions_app.command("show")
def show(version: Annotated[str, typer.Argument(help="id or WORKLOAD@NUMBER")], json: Json = False) -> None:
    """One version's config and provenance."""
    from flywheel.deploy import get_version

    with open_store() as store:
        v = get_version(store, version)
    if json:
        print_json(_version(v))
    else:
        console().print(f"[bold]{v.workload}@{v.number}[/bold] {v.id}  strategy {v.strategy}")
        console().print(f"parent {v.parent_id}  dataset {v.dataset_id}")
        console().print_json(data=v.config)


@versions_app.command("diff")
def diff(a: str, b: str, json: Json = False) -> None:
    """What changed from version A to version B, key by key."""
    from flywheel.deploy import config_diff, get_version

    with open_store() as store:
        va, vb = get_version(store, a), get_version(store, b)
    changes = config_diff(va, vb)
    if json:
        print_json({"from": va.id, "to": vb.id, "changes": changes})
        return
    out = console()
    out.print(f"{va.workload}@{va.number} -> {vb.workload}@{vb.number}: {len(changes)} change(s)")
    for key, change in changes.items():
        out.print(f"  {key}: {jsonlib.dumps(change, default=str)[:300]}", markup=False, highlight=False)


@deploy_app.command("status")
def status(workload: Annotated[str, typer.Option(help="The workload.")], json: Json = False) -> None:
    """The stable version and canary of a workload."""
    from flywheel.deploy import deployment

    with open_store() as store:
        current = deployment(store, workload)
    data = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in (current or {}).items()}
    if json:
        print_json(data or None)
    elif not current:
        console().print(
            f"{workload}: nothing deployed yet (flywheel deploy promote VERSION --workload {workload})"
        )
    else:
        canary = (
            f"; canary {current['canary_version']} on {current['canary_share']:.0%} of sessions"
            if current["canary_version"]
            else ""
        )
        console().print(f"{workload}: stable {current['stable_version']}{canary}")


@deploy_app.command("canary")
def canary(
    version: Annotated[str, typer.Argument(help="id or WORKLOAD@NUMBER")],
    workload: Annotated[str, typer.Option(help="The workload.")],
    share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of sessions it serves (0 = kill switch).")
    ] = 0.1,
    json: Json = False,
) -> None:
    """Serve a candidate to a share of sessions (sticky per session)."""
    from flywheel.deploy import set_canary

    with open_store() as store:
        current = set_canary(store, workload, version, share)
    print_json(
        {"canary": current["canary_version"], "share": current["canary_share"]}
    ) if json else console().print(
        f"{workload}: canary {current['canary_version']} on {current['canary_share']:.0%} of sessions"
    )


@deploy_app.command("promote")
def promote_(
    version: Annotated[str, typer.Argument(help="id or WORKLOAD@NUMBER")],
    workload: Annotated[str, typer.Option(help="The workload.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")] = "",
    json: Json = False,
) -> None:
    """Make a version the stable one for every session."""
    from flywheel.deploy import deployment, promote

    with open_store() as store:
        seen = deployment(store, workload)  # promote only over the state we saw (compare-and-swap)
        current = promote(
            store, workload, version, reason=reason, expect_updated_at=seen["updated_at"] if seen else None
        )
    print_json({"stable": current["stable_version"]}) if json else console().print(
        f"{workload}: stable is now {current['stable_version']}"
    )


@deploy_app.command("rollback")
def rollback_(
    workload: Annotated[str, typer.Option(help="The workload.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")] = "",
    json: Json = False,
) -> None:
    """Stop the canary: every session goes back to the stable version."""
    from flywheel.deploy import rollback

    with open_store() as store:
        current = rollback(store, workload, reason=reason)
    print_json({"stable": current["stable_version"], "canary": None}) if json else console().print(
        f"{workload}: canary stopped; stable {current['stable_version']} serves everyone"
    )


@deploy_app.command("watch")
def watch_(
    workload: Annotated[str, typer.Option(help="The workload.")],
    alpha: Annotated[
        float, typer.Option(min=0.0001, max=0.5, help="False-alarm rate of the sequential tests.")
    ] = 0.05,
    budget: Annotated[
        int, typer.Option(min=1, help="Canary tasks after which no regression means promote.")
    ] = 2000,
    min_tasks: Annotated[int, typer.Option(min=1, help="Tasks per arm before any decision.")] = 50,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide but do not act.")] = False,
    json: Json = False,
) -> None:
    """Compare the canary with stable on live traffic (always-valid sequential tests) and
    roll it back on a significant regression or promote it on a win or a spent budget."""
    from flywheel.deploy.live import LivePolicy, watch

    policy = LivePolicy(alpha=alpha, budget_tasks=budget, min_tasks=min_tasks)
    with open_store() as store:
        decision = watch(store, workload, policy, apply=not dry_run)
    if json:
        print_json(decision)
        return
    out = console()
    out.print(f"{workload}: [bold]{decision['action']}[/bold] ({decision['reason']})")
    for name, test in decision.get("tests", {}).items():
        out.print(f"  {name}: difference {test['difference']:+.3f}, always-valid p {test['p']:.3g}")
