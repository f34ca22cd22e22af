"""``flywheel knowledge``: the sources an agent's knowledge is read from, its
items and their freshness, and how relevant its retrievals were."""

from __future__ import annotations

import re
from typing import Annotated

import typer
from rich.table import Table

from flywheel.cli.common import console, open_store, print_json

knowledge_app = typer.Typer(
    help="Knowledge: register data sources, refresh them, list items, measure retrieval.",
    no_args_is_help=True,
)

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Workload = Annotated[str, typer.Option(help="The workload.")]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not match:
        raise typer.BadParameter(
            f"{text!r} is not a duration; write e.g. 30m, 6h or 1d", param_hint="--every"
        )
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


@knowledge_app.command("add-source")
def add_source(
    uri: Annotated[str, typer.Argument(help="A file, a folder of text files, or an http(s) URL.")],
    workload: Workload,
    every: Annotated[str, typer.Option(help="How often it is re-read: 30m, 6h, 1d.")] = "1d",
    json: Json = False,
) -> None:
    """Register a data source; it is read now and then on its schedule."""
    from flywheel.improve.knowledge import refresh_sources, register_source

    with open_store() as store:
        source = register_source(store, workload, uri, _seconds(every))
        report = refresh_sources(store, workload)
    if json:
        print_json({"id": source["id"], "uri": source["uri"], "refresh": report.__dict__})
        return
    console().print(f"source {source['uri']} ({source['id']}): {report.line()}", markup=False)


@knowledge_app.command("refresh")
def refresh(
    workload: Workload,
    force: Annotated[bool, typer.Option(help="Re-read every source, due or not.")] = False,
    json: Json = False,
) -> None:
    """Re-read the sources that are due: changed passages re-embedded later, gone ones flagged stale."""
    from flywheel.improve.knowledge import refresh_sources

    with open_store() as store:
        report = refresh_sources(store, workload, force=force)
    if json:
        print_json(report.__dict__)
        return
    out = console()
    out.print(report.line(), markup=False)
    for uri, error in (report.failed or {}).items():
        out.print(f"  {uri}: {error}", markup=False)


@knowledge_app.command("list")
def list_(
    workload: Workload,
    stale: Annotated[bool, typer.Option(help="Show the stale items instead.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
    json: Json = False,
) -> None:
    """Knowledge items with their source and freshness."""
    from flywheel.improve.knowledge import list_items

    with open_store() as store:
        rows = list_items(store, workload, stale=stale, limit=limit)
    if json:
        print_json([{**r, "refreshed_at": r["refreshed_at"].isoformat()} for r in rows])
        return
    table = Table("item", "source", "refreshed", "text")
    for r in rows:
        table.add_row(
            r["id"],
            f"{r['source_kind']}:{r['source_ref']}"[:40],
            f"{r['refreshed_at']:%Y-%m-%d %H:%M}",
            r["text"][:80],
        )
    console().print(table, markup=False, highlight=False)


@knowledge_app.command("sources")
def sources(
    workload: Annotated[str | None, typer.Option(help="Only this workload.")] = None, json: Json = False
) -> None:
    """The registered sources, their schedule and when they were last read."""
    from flywheel.improve.knowledge import list_sources

    with open_store() as store:
        rows = list_sources(store, workload)
    if json:
        print_json(
            [
                {
                    "id": r["id"],
                    "workload": r["workload"],
                    "uri": r["uri"],
                    "every_seconds": r["every_seconds"],
                    "last_read_at": r["last_read_at"].isoformat() if r["last_read_at"] else None,
                    "documents": len(r["state"] or {}),
                }
                for r in rows
            ]
        )
        return
    table = Table("source", "workload", "uri", "every", "last read", "documents")
    for r in rows:
        last = f"{r['last_read_at']:%Y-%m-%d %H:%M}" if r["last_read_at"] else "never"
        table.add_row(
            r["id"], r["workload"], r["uri"], f"{r['every_seconds']} s", last, str(len(r["state"] or {}))
        )
    console().print(table, markup=False, highlight=False)


@knowledge_app.command("quality")
def quality(workload: Workload, json: Json = False) -> None:
    """How relevant the agent's retrievals were, by reviewers' knowledge-relevance annotations."""
    from flywheel.improve.knowledge import retrieval_quality

    with open_store() as store:
        result = retrieval_quality(store, workload)
    if json:
        print_json(result)
        return
    if not result["annotated_documents"]:
        console().print(
            "no retrieved document has a relevance annotation yet; "
            "annotate them in the review pages or with flywheel review act TASK knowledge_relevance"
        )
        return
    console().print(
        f"precision {result['precision']:.1%} over {result['annotated_documents']} annotated documents; "
        f"a relevant document in {result['hit_rate']:.1%} of {result['retrievals']} judged retrievals"
    )
