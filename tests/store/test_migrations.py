from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from flywheel.store import current_revision
from flywheel.store.tables import metadata


def test_migrations_create_exactly_the_declared_schema(store):
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []
    assert current_revision(store.engine) == "0007"


def test_opening_twice_is_a_no_op(settings, store):
    from flywheel.store import Store

    with Store.open(settings) as again:
        assert current_revision(again.engine) == "0007"


def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path):
    from flywheel.config import Settings
    from flywheel.store import Store

    with (
        Store.open(Settings(database_url=f"sqlite:///{tmp_path}/f.db")) as store,
        store.engine.connect() as conn,
    ):
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
