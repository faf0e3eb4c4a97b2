"""Reconciliation: matches, breaks, and the matcher's sealed pending state.

Nothing here is in clear that the events table keeps sealed: amounts, differences and break
details are AES-256-GCM under the reconciliation state key (docs/reconciliation.md), and
records are named by event id only. Stage, rule, score, status, reason and currency are
public by design (currency is a public field of transaction/v1).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

def upgrade() -> None:
    op.create_table(
        "recon_matches",
        sa.Column("match_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("pairing", sa.String(130), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(120), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("left_ids", postgresql.ARRAY(postgresql.UUID(as_uuid=True)), nullable=False),
        sa.Column("right_ids", postgresql.ARRAY(postgresql.UUID(as_uuid=True)), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False, server_default=""),
        sa.Column("difference_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("matched_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
    )
    op.create_index("recon_matches_status_idx", "recon_matches", ["status", "matched_at"])
    op.create_table(
        "recon_breaks",
        sa.Column("break_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("pairing", sa.String(130), nullable=False),
        sa.Column("record_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False, server_default=""),
        sa.Column("amount_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("detail_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("related_ids", postgresql.ARRAY(postgresql.UUID(as_uuid=True)), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("recon_breaks_reason_idx", "recon_breaks", ["reason", "opened_at"])
    op.create_table(
        "recon_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    # The writer role (0002) records matches and breaks and keeps its state; analysts'
    # decisions go through the CLI's own login.
    op.execute("""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'attest_app') THEN
        GRANT SELECT, INSERT ON recon_matches, recon_breaks TO attest_app;
        GRANT SELECT, INSERT, UPDATE ON recon_state TO attest_app;
    END IF;
END $$;
""")


def downgrade() -> None:
    op.drop_table("recon_state")
    op.drop_table("recon_breaks")
    op.drop_table("recon_matches")
