"""The first tables: signing keys, events, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(200), primary_key=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("public_jwk", postgresql.JSONB(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True)),
        sa.Column("not_after", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_reason", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.CheckConstraint("alg IN ('Ed25519', 'ES256')", name="signing_keys_alg"),
    )
    op.create_index("ix_signing_keys_source", "signing_keys", ["source"])

    op.create_table(
        "events",
        sa.Column("event_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("typ", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("kid", sa.String(200), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
    )
    op.create_index("ix_events_source", "events", ["source"])

    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("audit_id", postgresql.UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64)),
        sa.Column("correlation_id", sa.String(200)),
        sa.Column("subject_ids", postgresql.ARRAY(sa.Text()), server_default="{}",
                  nullable=False),
        sa.Column("source_topic", sa.String(255)),
        sa.Column("source_partition", sa.Integer()),
        sa.Column("source_offset", sa.BigInteger()),
        sa.Column("detail", postgresql.JSONB(), server_default="{}", nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
    )
    op.create_index("audit_log_correlation_idx", "audit_log", ["correlation_id"])
    op.create_index("audit_log_action_time_idx", "audit_log", ["action", "time"])
    op.create_index("audit_log_actor_time_idx", "audit_log", ["actor", "time"])
    op.create_index("audit_log_time_idx", "audit_log", ["time"])
    op.create_index("audit_log_subjects_idx", "audit_log", ["subject_ids"],
                    postgresql_using="gin")


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("events")
    op.drop_index("ix_signing_keys_source", table_name="signing_keys")
    op.drop_table("signing_keys")
