"""cached LLM-judge scores of evaluations

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eval_judgements",
        sa.Column("version_id", sa.String(length=200), nullable=False),
        sa.Column("item_id", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("prompt_version", sa.String(length=40), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "version_id", "item_id", "model", "prompt_version", name=op.f("pk_eval_judgements")
        ),
    )


def downgrade() -> None:
    op.drop_table("eval_judgements")
