"""Fixtures: real databases (a SQLite file per test, and PostgreSQL), settings, stores.

``--db sqlite|postgresql|all`` chooses the backends; CI runs ``all``. A test
that asks for ``store`` runs once per chosen backend.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from tests.helpers import truncate_tables

from flywheel.config import Settings
from flywheel.store import Store

PG_ADMIN_URL = os.environ.get("FLYWHEEL_TEST_PG", "postgresql+psycopg://root@127.0.0.1:5432/test")

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        default="sqlite",
        choices=("sqlite", "postgresql", "all"),
        help="database backend(s) the store tests run against",
    )


def _backends(config: pytest.Config) -> list[str]:
    choice = config.getoption("--db")
    return ["sqlite", "postgresql"] if choice == "all" else [choice]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", _backends(metafunc.config), scope="session")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database of our own on the PostgreSQL server, dropped at the end."""
    name = f"flywheel_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # a chosen backend that is down is a failure, not a skip
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    engine = create_engine(url)
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'flywheel.db'}"
        return
    url = request.getfixturevalue("pg_database")
    yield url
    truncate_tables(url)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, home=tmp_path / "home", url=None, api_key=None)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    store = Store.open(settings)
    yield store
    store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
