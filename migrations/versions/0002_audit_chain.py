"""The tamper-evident audit trail: hash chain columns, append-only triggers, checkpoints, role.

Existing rows (from before the chain) are renumbered to a gapless seq (1..n in their
original order: seq gaps are how a deletion shows from now on; the old bigserial left gaps
after every ON CONFLICT skip) and chained in Python with the same function the sink uses.
The triggers refuse UPDATE, DELETE and TRUNCATE for everyone, the owner included; only a
superuser or the owner can disable them, which is why the worker should log in as a member
of ``attest_app`` (SELECT and INSERT only) and never as the tables' owner.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from audit.chain import GENESIS, hashed_view, row_hash

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BACKFILL_BATCH = 5000

_REFUSE_FUNCTION = """
CREATE OR REPLACE FUNCTION attest_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING HINT = 'audit rows are never changed or removed; see docs/audit.md';
END;
$$
"""

_ROLE = """
DO $$
DECLARE
    can_create boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'attest_app') THEN
        SELECT rolsuper OR rolcreaterole INTO can_create FROM pg_roles
         WHERE rolname = current_user;
        IF NOT can_create THEN
            RAISE NOTICE 'role attest_app is absent and % may not create roles; grants skipped',
                current_user;
            RETURN;
        END IF;
        CREATE ROLE attest_app NOLOGIN;
    END IF;
    GRANT SELECT, INSERT ON audit_log, audit_checkpoints TO attest_app;
    EXECUTE format('GRANT USAGE ON SEQUENCE %s, %s TO attest_app',
                   pg_get_serial_sequence('audit_log', 'seq'),
                   pg_get_serial_sequence('audit_checkpoints', 'id'));
END
$$
"""


def _renumber_and_chain(conn: sa.Connection) -> None:
    """Make seq gapless (1..n, same order) and fill prev_hash/row_hash, streaming."""
    count, top = conn.execute(sa.text("SELECT count(*), coalesce(max(seq), 0) FROM audit_log")).one()
    if not count:
        return
    if top != count:
        # Negate first: a single UPDATE to the final numbers could collide with a row
        # that has not moved yet (the primary key is checked row by row).
        conn.execute(sa.text("UPDATE audit_log SET seq = -seq"))
        conn.execute(sa.text(
            "UPDATE audit_log AS a SET seq = n.rn FROM "
            "(SELECT seq, row_number() OVER (ORDER BY seq DESC) AS rn FROM audit_log) AS n "
            "WHERE a.seq = n.seq"
        ))
    rows = conn.execute(sa.text(
        "SELECT seq, audit_id, time, actor, action, outcome, reason, correlation_id, "
        "subject_ids, source_topic, source_partition, source_offset, detail "
        "FROM audit_log ORDER BY seq"
    ).execution_options(stream_results=True, max_row_buffer=_BACKFILL_BATCH))
    prev, pending = GENESIS, []
    update = sa.text("UPDATE audit_log SET prev_hash = :p, row_hash = :h WHERE seq = :s")
    for row in rows:
        digest = row_hash(hashed_view(row._mapping), prev, row.seq)
        pending.append({"p": prev, "h": digest, "s": row.seq})
        prev = digest
        if len(pending) >= _BACKFILL_BATCH:
            conn.execute(update, pending)
            pending = []
    if pending:
        conn.execute(update, pending)


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("prev_hash", sa.String(64)))
    op.add_column("audit_log", sa.Column("row_hash", sa.String(64)))
    _renumber_and_chain(op.get_bind())
    op.alter_column("audit_log", "prev_hash", nullable=False)
    op.alter_column("audit_log", "row_hash", nullable=False)
    op.create_check_constraint("audit_log_hashes_hex", "audit_log",
                               "prev_hash ~ '^[0-9a-f]{64}$' AND row_hash ~ '^[0-9a-f]{64}$'")

    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False, unique=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("checkpoint", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
    )

    op.execute(_REFUSE_FUNCTION)
    for table in ("audit_log", "audit_checkpoints"):
        op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                   "FOR EACH ROW EXECUTE FUNCTION attest_refuse_change()")
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION attest_refuse_change()")
    op.execute(_ROLE)


def downgrade() -> None:
    op.execute("""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'attest_app') THEN
        REVOKE ALL ON audit_log FROM attest_app;
        EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM attest_app',
                       pg_get_serial_sequence('audit_log', 'seq'));
    END IF;
END
$$""")
    for table in ("audit_log", "audit_checkpoints"):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    op.execute("DROP FUNCTION IF EXISTS attest_refuse_change()")
    op.drop_table("audit_checkpoints")  # the role's grants on it go with it
    op.drop_constraint("audit_log_hashes_hex", "audit_log")
    op.drop_column("audit_log", "row_hash")
    op.drop_column("audit_log", "prev_hash")
