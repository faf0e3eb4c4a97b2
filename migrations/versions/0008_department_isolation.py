"""Department roles see only their own department: no key records, no other department's events.

* Key records (``data_keys``, ``tier_wrapping_keys``) are no longer readable by department
  roles: ``data_keys.subject_ref`` is a blind index of every subject, and with it a tax
  inspector could match national ids offline. The access service reads key records as
  itself (``attest_access_service``) after the department's rows, outside ``SET ROLE``.
* ``events`` gets row-level security for department roles: a role sees an event only when
  it may see that event's protected-fields row (which has row-level security by department
  since migration 0003). Owners and superusers are not affected; ``attest_app`` (the writer
  role of 0002/0003) keeps seeing and inserting every row.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

# DDL is assembled from this module's constants only (role and table names; no input).
# ruff: noqa: S608

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: department role -> the protected-fields table whose rows decide which events it sees
DEPARTMENT_TABLES = {
    "attest_social_security": "document_fields",
    "attest_tax_bureau": "document_fields",
    "attest_treasury": "transaction_fields",
    "attest_financial_crime": "transaction_fields",
}
SERVICE_ROLE = "attest_access_service"
WRITER = "attest_app"


def _if_role(role: str, body: str) -> str:
    return f"IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN {body} END IF;"


def upgrade() -> None:
    statements = []
    for role, table in DEPARTMENT_TABLES.items():
        statements.append(_if_role(role, (
            f"REVOKE SELECT ON data_keys, tier_wrapping_keys FROM {role}; "
            f"CREATE POLICY department_events_{role.removeprefix('attest_')} ON events FOR SELECT "
            f"TO {role} USING (EXISTS (SELECT 1 FROM {table} f "
            f"WHERE f.event_id = events.event_id));")))
    statements.append(_if_role(SERVICE_ROLE, (
        f"GRANT SELECT ON data_keys, tier_wrapping_keys TO {SERVICE_ROLE};")))
    statements.append(_if_role(WRITER, (
        f"CREATE POLICY writer_events_read ON events FOR SELECT TO {WRITER} USING (true); "
        f"CREATE POLICY writer_events_insert ON events FOR INSERT TO {WRITER} WITH CHECK (true);")))
    op.execute("DO $$\nBEGIN\n    " + "\n    ".join(statements) + "\nEND\n$$")
    op.execute("ALTER TABLE events ENABLE ROW LEVEL SECURITY")


def downgrade() -> None:
    op.execute("ALTER TABLE events DISABLE ROW LEVEL SECURITY")
    statements = []
    for role in DEPARTMENT_TABLES:
        statements.append(
            f"DROP POLICY IF EXISTS department_events_{role.removeprefix('attest_')} ON events;")
        statements.append(_if_role(role, f"GRANT SELECT ON data_keys, tier_wrapping_keys TO {role};"))
    statements.append("DROP POLICY IF EXISTS writer_events_read ON events;")
    statements.append("DROP POLICY IF EXISTS writer_events_insert ON events;")
    statements.append(_if_role(SERVICE_ROLE,
                               f"REVOKE SELECT ON data_keys, tier_wrapping_keys FROM {SERVICE_ROLE};"))
    op.execute("DO $$\nBEGIN\n    " + "\n    ".join(statements) + "\nEND\n$$")
