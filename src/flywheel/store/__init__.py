"""The store owns the database: schema, migrations, bulk writes and queries.

SQLite in one file is the embedded default; PostgreSQL is the production
store. Rows stay inside this package: callers get ``flywheel.records``.
"""

from flywheel.store.engine import create_store_engine, current_revision, upgrade_schema
from flywheel.store.store import SCOPES, ApiKey, RowBatch, Store, TraceAssembler, WriteResult

__all__ = [
    "SCOPES",
    "ApiKey",
    "RowBatch",
    "Store",
    "TraceAssembler",
    "WriteResult",
    "create_store_engine",
    "current_revision",
    "upgrade_schema",
]
