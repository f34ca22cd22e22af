"""``flywheel serve`` and ``flywheel db``."""

from __future__ import annotations

import contextlib
import errno
import socket
from typing import Annotated

import typer

from flywheel.cli.common import console, open_store, print_json, settings
from flywheel.errors import ConfigError
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
    sock = bind(config.host, config.port)  # before anything else: a taken port fails here, clearly
    try:
        store = open_store(config)  # migrate once, before any worker starts
        if config.auth and not any(k.revoked_at is None for k in store.list_keys()):
            console(stderr=True).print(
                "[yellow]no API key exists yet:[/yellow] create one with "
                "'flywheel keys create --scope ingest' (or --scope admin)"
            )
        store.close()
    except BaseException:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    console(stderr=True).print(f"serving on http://{config.host}:{bound} (database {config.database_url})")
    if workers == 1:
        server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning"))
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[sock])
        if not server.started:
            raise ConfigError(
                "the server did not start (see the messages above)",
                hint="check the database and the settings, then run 'flywheel serve' again",
            )
    else:
        # Workers build their own app from the environment. Each writes its
        # Prometheus series to a file in a fresh folder; a scrape sums them.
        import shutil
        from pathlib import Path

        from uvicorn.supervisors import Multiprocess

        metrics_dir = Path(config.home).resolve() / f"prometheus-{config.port}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
        os.environ.update(
            FLYWHEEL_HOST=config.host, FLYWHEEL_PORT=str(config.port), FLYWHEEL_AUTH=str(config.auth).lower()
        )
        multi = uvicorn.Config(
            "flywheel.server.app:create_app",
            factory=True,
            host=config.host,
            port=bound,
            workers=workers,
            log_level="warning",
        )
        with contextlib.suppress(KeyboardInterrupt):
            Multiprocess(multi, sockets=[sock]).run()


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a failure is reported before
    anything says the server is up (uvicorn serves on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except socket.gaierror as exc:  # a host name that does not resolve
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}", hint="check --host") from exc
    except OSError as exc:
        sock.close()
        reason = {
            errno.EADDRINUSE: f"port {port} is already in use",
            errno.EACCES: f"no permission to listen on port {port}",
            errno.EADDRNOTAVAIL: f"{host} is not an address of this machine",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        raise ConfigError(
            f"cannot listen on {host}:{port}: {reason}",
            hint="choose another port with --port (or FLYWHEEL_PORT), or stop what is using it",
        ) from exc
    sock.set_inheritable(True)
    return sock


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
