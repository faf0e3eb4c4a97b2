"""Inference results beside each event, keyed by model version.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inferences",
        sa.Column("event_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("task", sa.String(64), primary_key=True),
        sa.Column("model_version", sa.String(200), primary_key=True),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
    )
    op.create_index("inferences_task_label_idx", "inferences", ["task", "label"])


def downgrade() -> None:
    op.drop_table("inferences")
