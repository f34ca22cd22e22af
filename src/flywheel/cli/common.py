"""Helpers shared by the command modules: settings, store, output."""

from __future__ import annotations

import sys
from typing import Any

import orjson
from rich.console import Console

from flywheel.config import Settings
from flywheel.errors import ConfigError
from flywheel.store import Store, current_revision


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, soft_wrap=False)


def settings() -> Settings:
    return Settings()


def open_store(config: Settings | None = None) -> Store:
    """The store of FLYWHEEL_DATABASE_URL; with FLYWHEEL_AUTO_MIGRATE=false, one
    whose schema is not the one this version needs is refused with what to do."""
    config = config or settings()
    store = Store.open(config)
    if not config.auto_migrate:
        try:
            check_schema(store)
        except BaseException:
            store.close()
            raise
    return store


def check_schema(store: Store) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from flywheel.store.engine import MIGRATIONS

    alembic = Config()
    alembic.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(alembic)
    head = script.get_current_head()
    current = current_revision(store.engine)
    if current == head:
        return
    url = store.engine.url.render_as_string()
    if current is None:
        problem = f"the database at {url} has no schema yet"
    else:
        try:
            script.get_revision(current)
        except CommandError:
            raise ConfigError(
                f"the database at {url} has schema {current}, which this version of "
                f"data-flywheel does not know (it needs {head})",
                hint="upgrade data-flywheel, or point FLYWHEEL_DATABASE_URL at another database",
            ) from None
        problem = f"the database at {url} has schema {current}; this version needs {head}"
    raise ConfigError(
        problem + " (FLYWHEEL_AUTO_MIGRATE is false, so it was not migrated)",
        hint="run 'flywheel db upgrade', or set FLYWHEEL_AUTO_MIGRATE=true",
    )


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
