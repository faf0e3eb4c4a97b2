"""events.message_sha256: tell a redelivery from a replay on a reused offset.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("message_sha256", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column("events", "message_sha256")
