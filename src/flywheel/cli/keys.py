"""``flywheel keys``: API keys with scopes ingest, review, admin."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from flywheel.cli.common import console, open_store, print_json
from flywheel.store import SCOPES

app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)


@app.command("create")
def create(
    scope: Annotated[
        list[str], typer.Option("--scope", help=f"One of {', '.join(SCOPES)}; repeat for several.")
    ],
    name: Annotated[str, typer.Option(help="A label to recognise the key by.")] = "key",
    json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a key. The secret is printed once; only its hash is stored."""
    with open_store() as store:
        secret, key = store.create_key(name, scope)
    if json:
        print_json({"key": secret, "id": key.id, "name": key.name, "scopes": key.scopes})
        return
    console().print(f"created key [bold]{key.name}[/bold] ({key.id}) with scopes {', '.join(key.scopes)}")
    console().print("store it now; it is not shown again:")
    print(secret)


@app.command("list")
def list_(json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List keys (prefixes only, never secrets)."""
    with open_store() as store:
        keys = store.list_keys()
    rows: list[dict[str, Any]] = [
        {
            "id": k.id,
            "name": k.name,
            "prefix": k.prefix,
            "scopes": k.scopes,
            "created_at": k.created_at.isoformat(),
            "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
        }
        for k in keys
    ]
    if json:
        print_json(rows)
        return
    table = Table("id", "name", "prefix", "scopes", "created", "revoked")
    for r in rows:
        table.add_row(
            r["id"],
            r["name"],
            r["prefix"] + "...",
            ",".join(r["scopes"]),
            r["created_at"][:19],
            (r["revoked_at"] or "")[:19],
        )
    console().print(table)


@app.command("revoke")
def revoke(
    key: Annotated[str, typer.Argument(help="The key's id or prefix.")],
    json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Revoke a key: it stops working at once."""
    with open_store() as store:
        revoked = store.revoke_key(key)
    if json:
        print_json(
            {"id": revoked.id, "revoked_at": revoked.revoked_at.isoformat() if revoked.revoked_at else None}
        )
    else:
        console().print(f"revoked key {revoked.name} ({revoked.id})")
