"""The access service reads government discrepancies: the public columns of ``recon_breaks``.

``GET /v1/recon/breaks`` (access/recon_reads.py) serves each department the cross-agency
discrepancies its policy lets it see. The service's group role ``attest_access_service``
(migration 0006) gets SELECT on the columns that say which rule fired about which documents,
and never the sealed amount or detail.

Revision ID: 0011_recon_breaks_read
Revises: 0010_signing_key_scope
Create Date: 2026-12-01
"""

# DDL is assembled from this module's constants only (no input).
# ruff: noqa: S608

from __future__ import annotations

from alembic import op

revision = "0011_recon_breaks_read"
down_revision = "0010_signing_key_scope"
branch_labels = None
depends_on = None

ROLE = "attest_access_service"
COLUMNS = "break_id, pairing, record_id, source, reason, related_ids, opened_at"


def _when_role_exists(body: str) -> str:
    return f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
        {body}
    END IF;
END
$$"""


def upgrade() -> None:
    op.execute(_when_role_exists(f"GRANT SELECT ({COLUMNS}) ON recon_breaks TO {ROLE};"))


def downgrade() -> None:
    op.execute(_when_role_exists(f"REVOKE SELECT ({COLUMNS}) ON recon_breaks FROM {ROLE};"))
