from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from flywheel.store import current_revision
from flywheel.store.tables import metadata


def test_migrations_create_exactly_the_declared_schema(store):
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []
    assert current_revision(store.engine) == "0012"


def test_opening_twice_is_a_no_op(settings, store):
    from flywheel.store import Store

    with Store.open(settings) as again:
        assert current_revision(again.engine) == "0012"


def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path):
    from flywheel.config import Settings
    from flywheel.store import Store

    with (
        Store.open(Settings(database_url=f"sqlite:///{tmp_path}/f.db")) as store,
        store.engine.connect() as conn,
    ):
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_tool_sets_migration_moves_each_examples_tools_into_one_shared_row(db_url):
    """0008: examples that held copies of the same tool list name one tool set;
    reading them gives the same tools back, and a downgrade restores the copies."""
    from datetime import UTC, datetime

    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config
    from sqlalchemy.dialects import postgresql

    from flywheel.config import Settings
    from flywheel.store import Store, upgrade_schema
    from flywheel.store.engine import MIGRATIONS, create_store_engine

    engine = create_store_engine(db_url)
    upgrade_schema(engine)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))

    def to(revision: str, step=command.downgrade) -> None:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            step(config, revision)

    to("0007")
    json = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
    examples = sa.table(
        "examples",
        *[sa.column(n, json) for n in ("messages", "tools", "target", "quality")],
        *[sa.column(n) for n in ("id", "task_id", "session_id", "workload", "kind", "source", "rule")],
        sa.column("task_at", sa.DateTime(timezone=True)),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    weather = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            examples.insert(),
            [
                {"id": f"ex-{i}", "task_id": f"t{i}", "session_id": "s", "workload": "w", "kind": "sft",
                 "messages": [{"role": "user", "content": f"q{i}"}], "tools": tools,
                 "target": {"content": "a"}, "source": "success", "rule": "r", "quality": {},
                 "task_at": now, "created_at": now}
                for i, tools in enumerate([weather, weather, None])
            ],
        )  # fmt: skip
    to("head", command.upgrade)
    engine.dispose()
    with Store.open(Settings(database_url=db_url)) as store:
        found = store.examples_by_id(["ex-0", "ex-1", "ex-2"])
        assert [found[f"ex-{i}"]["tools"] for i in range(3)] == [weather, weather, None]
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM tool_sets")).scalar() == 1
        engine = store.engine
        to("0007")
        with engine.connect() as conn:
            rows = conn.execute(sa.select(examples.c.id, examples.c.tools).order_by(examples.c.id)).all()
        assert [tuple(r) for r in rows] == [("ex-0", weather), ("ex-1", weather), ("ex-2", None)]
        to("head", command.upgrade)
