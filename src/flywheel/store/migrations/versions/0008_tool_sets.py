"""examples name their offered tools by a tool set, stored once

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import orjson
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
    )


def _id(tools: object) -> str:
    # as flywheel.store.curation.tool_set_id (a migration keeps its own copy)
    blob = orjson.dumps(tools, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return "ts-" + hashlib.sha256(blob).hexdigest()[:32]


def upgrade() -> None:
    op.create_table(
        "tool_sets",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("tools", _json(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tool_sets")),
    )
    with op.batch_alter_table("examples", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tools_id", sa.String(length=200), nullable=True))

    examples = sa.table(
        "examples", sa.column("id", sa.String), sa.column("tools", _json()), sa.column("tools_id", sa.String)
    )
    tool_sets = sa.table(
        "tool_sets",
        sa.column("id", sa.String),
        sa.column("tools", _json()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    conn = op.get_bind()
    stored: set[str] = set()
    now = datetime.now(UTC)
    last = ""
    while True:  # keyset pages: a large store is moved a page at a time
        page = conn.execute(
            sa.select(examples.c.id, examples.c.tools)
            .where(examples.c.id > last, examples.c.tools.is_not(None))
            .order_by(examples.c.id)
            .limit(5000)
        ).all()
        if not page:
            break
        last = page[-1].id
        updates, new = [], []
        for example_id, tools in page:
            key = _id(tools)
            updates.append({"b_id": example_id, "b_tools_id": key})
            if key not in stored:
                stored.add(key)
                new.append({"id": key, "tools": tools, "created_at": now})
        if new:
            conn.execute(tool_sets.insert(), new)
        named = examples.update().where(examples.c.id == sa.bindparam("b_id"))
        conn.execute(named.values(tools_id=sa.bindparam("b_tools_id")), updates)
    with op.batch_alter_table("examples", schema=None) as batch_op:
        batch_op.drop_column("tools")


def downgrade() -> None:
    with op.batch_alter_table("examples", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tools", _json(), nullable=True))
    conn = op.get_bind()
    conn.execute(
        sa.text(
            "UPDATE examples SET tools = (SELECT tools FROM tool_sets WHERE tool_sets.id = examples.tools_id)"
        )
    )
    with op.batch_alter_table("examples", schema=None) as batch_op:
        batch_op.drop_column("tools_id")
    op.drop_table("tool_sets")
