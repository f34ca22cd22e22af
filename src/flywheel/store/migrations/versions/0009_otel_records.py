"""OpenTelemetry spans and log records kept per trace, so a trace is assembled whole

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
    )


def upgrade() -> None:
    op.create_table(
        "otel_records",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("task_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("span_id", sa.String(length=16), nullable=False),
        sa.Column("data", _json(), nullable=False),
        sa.Column("redactions", sa.Integer(), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_otel_records")),
    )
    op.create_index(op.f("ix_otel_records_task_id"), "otel_records", ["task_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_otel_records_task_id"), table_name="otel_records")
    op.drop_table("otel_records")
