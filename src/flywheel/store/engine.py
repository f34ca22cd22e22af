"""Engines for the two supported databases, and schema migrations.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL`` by
default, so a committed write survives a crash of the process and of the
machine; PostgreSQL is reached through psycopg 3.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from flywheel.errors import ConfigError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"

#: Execution option marking a connection that will write (see ``_configure_sqlite``).
WRITE_OPTION = "flywheel_write"


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _loads(value: Any) -> Any:
    """A JSON column's value. SQLite gives a column declared JSON numeric affinity,
    so a value that is a bare number (an output of ``42``) comes back a number,
    not text: it is the value already."""
    if isinstance(value, int | float):
        return value
    return orjson.loads(value)


def create_store_engine(url: str, *, sqlite_synchronous: str = "FULL") -> Engine:
    """An engine for ``url``, creating the SQLite file's folder when needed."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"FLYWHEEL_DATABASE_URL {url!r} is not a database URL",
            hint="use sqlite:///path/to/flywheel.db or postgresql+psycopg://user@host/db",
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            json_serializer=_dumps,
            json_deserializer=_loads,
            connect_args={"timeout": 60, "check_same_thread": False},
        )
        _configure_sqlite(engine, sqlite_synchronous)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(
            parsed,
            json_serializer=_dumps,
            json_deserializer=orjson.loads,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=10,
        )
    raise ConfigError(
        f"unsupported database {backend!r} in {url!r}",
        hint="data-flywheel stores to SQLite or PostgreSQL",
    )


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=OFF")
        # 64 MB of page cache (default 2 MB): curation reads and writes millions of rows
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the lock up front (IMMEDIATE): no deadlock upgrading a reader.
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def upgrade_schema(engine: Engine, revision: str = "head") -> None:
    """Run Alembic migrations up to ``revision`` on ``engine``."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
