"""Field-level encryption: key tables, protected-field tables, department roles, grants, RLS.

From this revision on, ``events.payload`` holds only the *public* fields of an event (see
schemas/tiers.yaml); every other field is an AES-GCM ciphertext in the schema's
``*_fields`` table. Rows stored before this revision keep their payload as it was (this
revision has no keys to encrypt them with); docs/security.md says how to handle them.

Department roles (NOLOGIN, created only when absent and only when the migrating user may
create roles) get column-level SELECT on exactly the fields their policy lets them read, and
row-level security limits them to their own department's rows. The grants mirror
policies/government.yaml and policies/finance.yaml; tests/protection/test_grants.py compares
them with the policy files, so the two cannot drift apart silently.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

# DDL is assembled from this module's constants only (role, table and column names; no input).
# ruff: noqa: S608

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TIER_CHECK = "tier IN ('internal', 'confidential', 'restricted')"
_FIELD_TABLES = ("transaction_fields", "document_fields", "approval_fields")

#: department role -> (row owners it may see, {table: protected columns it may read}).
#: Every role also reads event_id, department and the table's blind indexes (for lookups).
DEPARTMENT_GRANTS: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    "attest_social_security": (
        ("social-security-bureau",),
        {"document_fields": ("subject_id", "insurance_status")},
    ),
    "attest_tax_bureau": (
        ("tax-bureau",),
        {"document_fields": ("income", "tax_paid")},
    ),
    "attest_treasury": (
        ("*",),
        {"transaction_fields": ("reference", "value_date", "direction", "amount",
                                "counterparty", "memo")},
    ),
    "attest_financial_crime": (
        ("*",),
        {"transaction_fields": ("reference", "value_date", "direction", "amount",
                                "counterparty", "memo", "account")},
    ),
}
_ALWAYS = {
    "transaction_fields": ("event_id", "department", "account_bidx"),
    "document_fields": ("event_id", "department", "subject_id_bidx"),
    "approval_fields": ("event_id", "department"),
}
#: The writer role made by 0002: it inserts, and reads nothing it stored but key liveness.
_WRITER = "attest_app"


def _ciphertext_columns(*names: str) -> list[sa.Column]:
    return [sa.Column(name, sa.LargeBinary()) for name in names]


def _field_table(name: str, *columns: sa.Column) -> None:
    # event_id is the events row's id. No foreign key: a row is only ever inserted in the
    # transaction that inserted its event (storage.events), events are never deleted, and the
    # per-row foreign-key trigger cost more than the encryption itself on a 500-row batch.
    op.create_table(
        name,
        sa.Column("event_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("department", sa.String(64), nullable=False),
        *columns,
    )


def _roles_and_grants() -> str:
    """One DO block: create missing roles (when allowed), grant, and fill row access."""
    statements = []
    for role, (owners, tables) in DEPARTMENT_GRANTS.items():
        grants = [
            f"GRANT SELECT ON events, tier_wrapping_keys, data_keys, department_row_access TO {role};",
            f"EXECUTE format('GRANT USAGE ON SCHEMA %I TO {role}', current_schema());",
        ]
        for table, columns in tables.items():
            grants.append(f"GRANT SELECT ({', '.join(_ALWAYS[table] + columns)}) ON {table} TO {role};")
        rows = ", ".join(f"('{role}', '{owner}')" for owner in owners)
        statements.append(f"""
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
        IF NOT can_create THEN
            RAISE NOTICE 'role {role} is absent and % may not create roles; grants skipped',
                current_user;
        ELSE
            CREATE ROLE {role} NOLOGIN;
        END IF;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
        {' '.join(grants)}
        INSERT INTO department_row_access (db_role, owner) VALUES {rows} ON CONFLICT DO NOTHING;
    END IF;""")
    writer = f"""
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{_WRITER}') THEN
        GRANT SELECT (event_id, topic, "partition", "offset"), INSERT ON events TO {_WRITER};
        GRANT INSERT ON tier_wrapping_keys, data_keys, {', '.join(_FIELD_TABLES)} TO {_WRITER};
        -- SELECT ... FOR SHARE needs UPDATE on some column; bumping the epoch only makes
        -- writers drop their cached keys, so this grants nothing worth having.
        GRANT SELECT, UPDATE (epoch) ON data_key_shredding TO {_WRITER};
        {' '.join(f"CREATE POLICY writer_inserts ON {t} FOR INSERT TO {_WRITER} WITH CHECK (true);"
                  for t in _FIELD_TABLES)}
    END IF;"""
    return f"""
DO $$
DECLARE
    can_create boolean;
BEGIN
    SELECT rolsuper OR rolcreaterole INTO can_create FROM pg_roles WHERE rolname = current_user;
    {''.join(statements)}
    {writer}
END
$$"""


def upgrade() -> None:
    op.create_table(
        "tier_wrapping_keys",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("kek_version", sa.Integer(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("rewrapped_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(_TIER_CHECK, name="tier_wrapping_keys_tier"),
    )
    op.create_index("tier_wrapping_keys_tier_version_idx", "tier_wrapping_keys",
                    ["tier", "kek_version"])
    op.create_table(
        "data_keys",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("subject_domain", sa.String(32), nullable=False),
        sa.Column("subject_ref", sa.LargeBinary()),
        # No foreign key to tier_wrapping_keys: wrapping keys are never deleted, a data key is
        # stored in the transaction that stores (or already stored) its wrapping key, and the
        # per-row check was a third of the cost of storing a batch of new subjects' keys.
        sa.Column("wrapping_key_id", postgresql.UUID(as_uuid=True)),
        sa.Column("wrapped", sa.LargeBinary()),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("destroyed_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(_TIER_CHECK, name="data_keys_tier"),
        sa.CheckConstraint("(destroyed_at IS NULL) = (wrapped IS NOT NULL)",
                           name="data_keys_destroyed"),
    )
    op.create_index("data_keys_subject_idx", "data_keys", ["subject_ref"])

    _field_table("transaction_fields", *_ciphertext_columns(
        "reference", "value_date", "direction", "amount", "counterparty", "memo", "account",
        "account_bidx"))
    op.create_index("transaction_fields_account_bidx_idx", "transaction_fields", ["account_bidx"])
    _field_table("document_fields", *_ciphertext_columns(
        "document_id", "title", "body", "subject_id", "insurance_status", "income", "tax_paid",
        "subject_id_bidx"))
    op.create_index("document_fields_subject_id_bidx_idx", "document_fields", ["subject_id_bidx"])
    _field_table("approval_fields", *_ciphertext_columns("reason"))

    # One row: how many times `attest forget` ran. Writers read it under a share lock in every
    # storing transaction (storage.protected.shredding_epoch); forget increments it first.
    op.create_table(
        "data_key_shredding",
        sa.Column("id", sa.SmallInteger(), primary_key=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False, server_default="0"),
        sa.CheckConstraint("id = 1", name="data_key_shredding_one_row"),
    )
    op.execute("INSERT INTO data_key_shredding (id, epoch) VALUES (1, 0)")
    op.create_table(
        "department_row_access",
        sa.Column("db_role", sa.String(63), primary_key=True),
        sa.Column("owner", sa.String(64), primary_key=True),
    )
    # Approvals are looked up by request id when a read needs one.
    op.create_index("events_approval_request_idx", "events", [sa.text("(payload->>'request_id')")],
                    postgresql_where=sa.text("typ = 'attest.approval.v1'"))

    for table in _FIELD_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY department_rows ON {table} FOR SELECT USING (EXISTS ("
            "SELECT 1 FROM department_row_access a WHERE a.db_role = current_user "
            f"AND (a.owner = '*' OR a.owner = {table}.department)))"
        )
    op.execute(_roles_and_grants())


def downgrade() -> None:
    revokes = " ".join(
        f"IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN "
        f"REVOKE ALL ON events FROM {role}; "
        f"EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM {role}', current_schema()); END IF;"
        for role in DEPARTMENT_GRANTS
    )
    op.execute(f"""
DO $$
BEGIN
    {revokes}
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{_WRITER}') THEN
        REVOKE SELECT (event_id, topic, "partition", "offset"), INSERT ON events FROM {_WRITER};
    END IF;
END
$$""")
    op.drop_index("events_approval_request_idx", table_name="events")
    for table in (*_FIELD_TABLES, "department_row_access", "data_key_shredding", "data_keys",
                  "tier_wrapping_keys"):
        op.drop_table(table)  # grants and policies on a table go with it
    # Roles are cluster-wide and may hold grants in other databases: dropped only when free.
    for role in DEPARTMENT_GRANTS:
        op.execute(f"""
DO $$
BEGIN
    DROP ROLE IF EXISTS {role};
EXCEPTION WHEN dependent_objects_still_exist THEN
    RAISE NOTICE 'role {role} still has privileges elsewhere; kept';
END
$$""")
