"""The access service's state: access requests, approvers' registered keys, approval decisions.

Nothing in these tables is trusted because it is there: every approval carries the approver's
own JWS over the request's digest and the access service's attestation, and both are checked
again at read time (access.approvals), so a row inserted by SQL counts for nothing.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

# DDL is assembled from this module's constants only (role and table names; no input).
# ruff: noqa: S608

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


#: The access service's group role: the service's login is a member of it (and through it of
#: the department roles, which it can only SET ROLE to). It reads events and keys, keeps
#: requests and decisions, and appends to the audit log; it updates and deletes nothing.
SERVICE_ROLE = "attest_access_service"
DEPARTMENT_ROLES = ("attest_social_security", "attest_tax_bureau", "attest_treasury",
                    "attest_financial_crime")

_SERVICE_GRANTS = f"""
DO $$
DECLARE
    can_create boolean;
    dept text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{SERVICE_ROLE}') THEN
        SELECT rolsuper OR rolcreaterole INTO can_create FROM pg_roles
         WHERE rolname = current_user;
        IF NOT can_create THEN
            RAISE NOTICE 'role {SERVICE_ROLE} is absent and % may not create roles; grants skipped',
                current_user;
            RETURN;
        END IF;
        CREATE ROLE {SERVICE_ROLE} NOLOGIN NOINHERIT;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO {SERVICE_ROLE}', current_schema());
    GRANT SELECT, INSERT ON access_requests, access_approver_keys, access_approvals
        TO {SERVICE_ROLE};
    GRANT SELECT, INSERT ON audit_log TO {SERVICE_ROLE};
    GRANT SELECT ON audit_checkpoints TO {SERVICE_ROLE};
    FOREACH dept IN ARRAY ARRAY{list(DEPARTMENT_ROLES)!r} LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = dept) THEN
            EXECUTE format('GRANT %I TO {SERVICE_ROLE}', dept);
        END IF;
    END LOOP;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "access_requests",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("requester", sa.String(128), nullable=False),
        sa.Column("department", sa.String(64), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("typ", sa.String(64), nullable=False),
        sa.Column("subject_domain", sa.String(32), nullable=False),
        sa.Column("subject_ref", sa.LargeBinary(), nullable=False),
        sa.Column("fields", postgresql.JSONB(), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
    )
    op.create_index("access_requests_requester_idx", "access_requests", ["requester"])
    op.create_table(
        "access_approver_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("jwk", postgresql.JSONB(), nullable=False),
        sa.Column("attestation", sa.Text(), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
    )
    op.create_index("access_approver_keys_subject_idx", "access_approver_keys", ["subject"])
    op.create_table(
        "access_approvals",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("request_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("approver", sa.String(128), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("approver_kid", sa.String(64), nullable=False),
        sa.Column("approver_department", sa.String(64), nullable=False),
        sa.Column("approver_roles", postgresql.JSONB(), nullable=False),
        sa.Column("jws", sa.Text(), nullable=False),
        sa.Column("attestation", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.CheckConstraint("decision IN ('approve', 'deny')", name="access_approvals_decision"),
    )
    op.create_index("access_approvals_request_idx", "access_approvals", ["request_id"])
    op.execute(_SERVICE_GRANTS)


def downgrade() -> None:
    op.execute(f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{SERVICE_ROLE}') THEN
        REVOKE ALL ON audit_log, audit_checkpoints FROM {SERVICE_ROLE};
        EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM {SERVICE_ROLE}', current_schema());
    END IF;
END
$$""")
    for table in ("access_approvals", "access_approver_keys", "access_requests"):
        op.drop_table(table)
