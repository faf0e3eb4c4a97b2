"""Audit-signing keys of the components that publish to the audit topic (issue 14, item 4).

``audit_signers`` holds one public Ed25519 key per row: the component holding its private
part (``worker``, ``operator``), the actor patterns it may sign records for (``worker:*``,
``audit-sink``, ``operator:*``), who registered it and when, and when and by whom it was
revoked. The audit sink chains only messages that verify against a key here (docs/audit.md).

Revocation is an UPDATE of ``revoked_at``/``revoked_by``; a row is never deleted (a trigger
refuses DELETE and TRUNCATE, the owner included), so an alarm naming a revoked key can still
be explained. The writer role (``attest_app``: the workers, whose sink verifies) may only
read the table: a worker that could register a key could vouch for itself.

Revision ID: 0014_audit_signers
Revises: 0013_approver_key_unique
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "0014_audit_signers"
down_revision = "0013_approver_key_unique"
branch_labels = None
depends_on = None

TABLE = "audit_signers"

_NO_DELETE = """
CREATE OR REPLACE FUNCTION attest_refuse_signer_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_signers keeps every registration: % is not allowed', TG_OP
        USING HINT = 'revoke a key with `attest audit signers revoke KID`';
END;
$$;
CREATE TRIGGER audit_signers_no_delete BEFORE DELETE ON audit_signers
    FOR EACH ROW EXECUTE FUNCTION attest_refuse_signer_delete();
CREATE TRIGGER audit_signers_no_truncate BEFORE TRUNCATE ON audit_signers
    FOR EACH STATEMENT EXECUTE FUNCTION attest_refuse_signer_delete();
"""

_GRANT = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'attest_app') THEN
        GRANT SELECT ON audit_signers TO attest_app;
    END IF;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("kid", sa.String(200), primary_key=True),
        sa.Column("component", sa.String(64), nullable=False),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("public_jwk", JSONB, nullable=False),
        sa.Column("actors", ARRAY(sa.String(200)), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("registered_by", sa.String(200), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(200), nullable=True),
        sa.CheckConstraint("alg = 'Ed25519'", name="audit_signers_alg_pinned"),
        sa.CheckConstraint("cardinality(actors) > 0", name="audit_signers_speak_for_someone"),
    )
    op.execute(_NO_DELETE)
    op.execute(_GRANT)


def downgrade() -> None:
    op.drop_table(TABLE)  # DROP is not DELETE: the triggers go with the table
    op.execute("DROP FUNCTION IF EXISTS attest_refuse_signer_delete()")
