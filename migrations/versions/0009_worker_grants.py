"""The writer role gets exactly what a worker needs, so workers need not run as the owner.

``attest_app`` (migrations 0002, 0003, 0007) lacked: the schema version check at start
(``alembic_version``), the key registry (``signing_keys``), the redelivery check over
``events`` (its rows hold public fields only), ``inferences``, and ``id`` of the key tables
(``INSERT ... ON CONFLICT (id) DO NOTHING`` needs to read the conflict column). It still reads
no ciphertext, no wrapped key and no ``subject_ref``. Found by running a real worker as a
member of ``attest_app`` (tests/access/test_worker_role.py).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

# DDL is assembled from this module's constants only (no input).
# ruff: noqa: S608

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_GRANTS = """
    GRANT SELECT ON alembic_version, signing_keys, events TO attest_app;
    GRANT SELECT (id) ON tier_wrapping_keys, data_keys TO attest_app;
    GRANT SELECT, INSERT ON inferences TO attest_app;
"""
_REVOKES = """
    REVOKE SELECT ON alembic_version, signing_keys FROM attest_app;
    REVOKE SELECT ON events FROM attest_app;
    GRANT SELECT (event_id, topic, "partition", "offset") ON events TO attest_app;
    REVOKE SELECT (id) ON tier_wrapping_keys, data_keys FROM attest_app;
    REVOKE SELECT, INSERT ON inferences FROM attest_app;
"""


def _when_role_exists(body: str) -> str:
    return f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'attest_app') THEN
        {body}
    END IF;
END
$$"""


def upgrade() -> None:
    op.execute(_when_role_exists(_GRANTS))


def downgrade() -> None:
    op.execute(_when_role_exists(_REVOKES))
