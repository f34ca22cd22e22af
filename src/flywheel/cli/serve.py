"""``flywheel serve`` and ``flywheel db``."""

from __future__ import annotations

from typing import Annotated

import typer

from flywheel.cli.common import console, print_json, settings
from flywheel.store import Store, current_revision

db_app = typer.Typer(help="The database: schema migrations.", no_args_is_help=True)


def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [FLYWHEEL_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [FLYWHEEL_PORT].")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Accept requests without a key (loopback only).")
    ] = False,
) -> None:
    """Run the HTTP server: ingestion, API, OTLP, metrics."""
    import os

    import uvicorn

    from flywheel.server import check_bind, create_app

    config = settings()
    update = {"host": host or config.host, "port": port or config.port, "auth": config.auth and not no_auth}
    config = config.model_copy(update=update)
    check_bind(config.host, config.auth)
    store = Store.open(config)  # migrate once, before any worker starts
    if config.auth and not any(k.revoked_at is None for k in store.list_keys()):
        console(stderr=True).print(
            "[yellow]no API key exists yet:[/yellow] create one with "
            "'flywheel keys create --scope ingest' (or --scope admin)"
        )
    store.close()
    console(stderr=True).print(
        f"serving on http://{config.host}:{config.port} (database {config.database_url})"
    )
    if workers == 1:
        uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="warning")
    else:
        # Workers build their own app from the environment. Each writes its
        # Prometheus series to a file in a fresh folder; a scrape sums them.
        import shutil
        from pathlib import Path

        metrics_dir = Path(config.home).resolve() / f"prometheus-{config.port}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
        os.environ.update(
            FLYWHEEL_HOST=config.host, FLYWHEEL_PORT=str(config.port), FLYWHEEL_AUTH=str(config.auth).lower()
        )
        uvicorn.run(
            "flywheel.server.app:create_app",
            factory=True,
            host=config.host,
            port=config.port,
            workers=workers,
            log_level="warning",
        )


@db_app.command("upgrade")
def upgrade(json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Create or migrate the schema of FLYWHEEL_DATABASE_URL to the latest version."""
    config = settings().model_copy(update={"auto_migrate": False})
    store = Store.open(config)
    before = current_revision(store.engine)
    store.upgrade()
    after = current_revision(store.engine)
    store.close()
    if json:
        print_json({"database": config.database_url, "from": before, "to": after})
    else:
        console().print(f"database {config.database_url}: schema {before or 'empty'} -> {after}")
