"""a standing evaluation set per workload: items kept across cycles, with versions

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
    )


def upgrade() -> None:
    op.create_table(
        "eval_set_items",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("workload", sa.String(length=200), nullable=False),
        sa.Column("question", sa.String(length=20), nullable=False),
        sa.Column("stratum", sa.String(length=400), nullable=False),
        sa.Column("provenance", sa.String(length=40), nullable=False),
        sa.Column("task_id", sa.String(length=200), nullable=False),
        sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_version", sa.Integer(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tools_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("stale", sa.String(length=400), nullable=True),
        sa.Column("validated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eval_set_items")),
    )
    op.create_index(
        op.f("ix_eval_set_items_workload_retired_at"),
        "eval_set_items",
        ["workload", "retired_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_eval_set_items_workload_question"), "eval_set_items", ["workload", "question"], unique=False
    )
    op.create_table(
        "eval_set_versions",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("workload", sa.String(length=200), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("retired", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.String(length=200), nullable=True),
        sa.Column("summary", _json(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eval_set_versions")),
    )
    op.create_index(
        op.f("ix_eval_set_versions_workload_number"), "eval_set_versions", ["workload", "number"], unique=True
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_eval_set_versions_workload_number"), table_name="eval_set_versions")
    op.drop_table("eval_set_versions")
    op.drop_index(op.f("ix_eval_set_items_workload_question"), table_name="eval_set_items")
    op.drop_index(op.f("ix_eval_set_items_workload_retired_at"), table_name="eval_set_items")
    op.drop_table("eval_set_items")
