"""``flywheel evalset``: a workload's standing evaluation set (``flywheel.curate.eval_set``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from flywheel.cli.common import console, open_store, print_json
from flywheel.curate.eval_set import validate_item
from flywheel.errors import InvalidInput

evalset_app = typer.Typer(
    help="The standing evaluation set each workload's gate judges on: show it, re-validate stale items.",
    no_args_is_help=True,
)

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}


@evalset_app.command("show")
def show(
    workload: Annotated[str, typer.Argument(help="The workload.")],
    items: Annotated[bool, typer.Option("--items", help="List the items too.")] = False,
    json: Json = False,
) -> None:
    """The set's versions (items, added, retired, stale, by provenance) and, with
    ``--items``, its items."""
    with open_store() as store:
        versions = store.list_eval_sets(workload)
        rows = store.eval_set_items(workload) if items or json else []
    if not versions:
        raise InvalidInput(
            f"workload {workload!r} has no standing evaluation set yet",
            hint="run a cycle (flywheel cycle run) or curate and let a cycle grow it; "
            "`flywheel seed` bootstraps one for a new workload",
        )
    if json:
        print_json({"versions": [_jsonable(v) for v in versions], "items": [_jsonable(r) for r in rows]})
        return
    table = Table("version", "items", "added", "retired", "stale", "provenance", "dataset", "created")
    for v in versions:
        summary = v["summary"] or {}
        provenance = ", ".join(f"{k} {n}" for k, n in sorted((summary.get("provenance") or {}).items()))
        table.add_row(
            str(v["number"]),
            str(v["items"]),
            str(v["added"]),
            str(v["retired"]),
            str(summary.get("stale", 0)),
            provenance,
            str(v["dataset_id"] or ""),
            v["created_at"].strftime("%Y-%m-%d %H:%M"),
        )
    console().print(table, markup=False, highlight=False)
    if items:
        listing = Table("item", "stratum", "provenance", "labelled", "stale")
        for r in rows:
            listing.add_row(
                r["id"],
                r["stratum"],
                r["provenance"],
                r["labelled_at"].strftime("%Y-%m-%d"),
                r["stale"] or "",
            )
        console().print(listing, markup=False, highlight=False)


@evalset_app.command("validate")
def validate(
    item_id: Annotated[
        str, typer.Argument(help="The item (an example id, from `flywheel evalset show --items`).")
    ],
    json: Json = False,
) -> None:
    """Re-confirm a stale item's label: the gate counts it again."""
    with open_store() as store:
        row = validate_item(store, item_id)
    if json:
        print_json(_jsonable(row))
        return
    console().print(f"{row['id']} is fresh again ({row['stratum']}, {row['provenance']})", markup=False)
