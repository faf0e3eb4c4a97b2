"""Inference labels sealed like their source fields; keyed message hash (issue 14, item 7).

``inferences.label`` and ``score`` were stored in clear, though a label says what a
confidential text is ("benefit_application", "salary"). They become ``label_sealed`` and
``score_sealed``: AES-256-GCM field ciphertexts under the subject's data key of the tier of
the fields the model read (``inference.labels``), bound to the row and to ``department``
(the event's department, public in ``events`` already). The clear columns and their index
are dropped. Rows stored before this migration cannot be sealed here (the subject is in the
event's sealed fields, which no migration can read), so they are deleted: they are derived
data, and ``attest replay --model-dir ...`` classifies the events again, sealed.

A label that reaches the table after its subject was forgotten (the enrichment stage lags
intake, and ``attest forget`` ran in between) would be sealed under a fresh data key and
outlive the forget; a trigger drops it instead: a row whose event's protected-fields row has
its subject index cleared (what forget does) is not inserted. It runs as the owner (the
writer role cannot read the ``*_fields`` tables), and under the shredding epoch's share lock
the enrichment stage holds, so a forget either committed before it (the index is cleared) or
waits and deletes the row itself.

The writer role keeps INSERT on ``inferences`` but may SELECT only the key columns (the
``ON CONFLICT`` check and replay's "already classified?" need nothing else): it never reads a
ciphertext back, as for the ``*_fields`` tables.

``events.message_mac``: HMAC-SHA256 under a key derived from the worker's ``account``
blind-index key (``protection.blind_index.message_mac``) replaces the unkeyed
``message_sha256`` for rows stored from now on. Existing rows keep their ``message_sha256``
(no migration holds the key to convert them, and the redelivery check still reads it);
new rows leave it NULL.

Downgrade deletes every inference row (the sealed labels cannot be opened here), drops the
trigger and restores the clear columns, the index and the writer's table-wide SELECT; it drops ``message_mac``
(rows stored since then are then compared by position alone, as rows from before 0005).

Revision ID: 0016_sealed_inferences
Revises: 0015_key_requires_encryption
"""

# DDL is assembled from this module's constants only (no input).
# ruff: noqa: S608

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_sealed_inferences"
down_revision = "0015_key_requires_encryption"
branch_labels = None
depends_on = None

_NARROW = """
    REVOKE SELECT ON inferences FROM attest_app;
    GRANT SELECT (event_id, task, model_version) ON inferences TO attest_app;
"""
_WIDEN = """
    REVOKE SELECT (event_id, task, model_version) ON inferences FROM attest_app;
    GRANT SELECT ON inferences TO attest_app;
"""


_FORGOTTEN_TRIGGER = """
CREATE FUNCTION attest_inference_of_live_subject() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM transaction_fields f
               WHERE f.event_id = NEW.event_id AND f.account_bidx IS NULL)
       OR EXISTS (SELECT 1 FROM document_fields f
                  WHERE f.event_id = NEW.event_id AND f.subject_id_bidx IS NULL) THEN
        RETURN NULL;  -- the event's subject was forgotten: its label is not kept
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION attest_inference_of_live_subject() FROM PUBLIC;
CREATE TRIGGER inferences_of_forgotten_subjects BEFORE INSERT ON inferences
    FOR EACH ROW EXECUTE FUNCTION attest_inference_of_live_subject();
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
    op.execute("DELETE FROM inferences")
    op.drop_index("inferences_task_label_idx", table_name="inferences")
    op.drop_column("inferences", "label")
    op.drop_column("inferences", "score")
    op.add_column("inferences", sa.Column("department", sa.String(64), nullable=False))
    op.add_column("inferences", sa.Column("label_sealed", sa.LargeBinary(), nullable=False))
    op.add_column("inferences", sa.Column("score_sealed", sa.LargeBinary(), nullable=False))
    op.execute(_when_role_exists(_NARROW))
    op.execute(_FORGOTTEN_TRIGGER)
    op.add_column("events", sa.Column("message_mac", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column("events", "message_mac")
    op.execute(_when_role_exists(_WIDEN))
    op.execute("DROP TRIGGER inferences_of_forgotten_subjects ON inferences")
    op.execute("DROP FUNCTION attest_inference_of_live_subject()")
    op.execute("DELETE FROM inferences")
    op.drop_column("inferences", "score_sealed")
    op.drop_column("inferences", "label_sealed")
    op.drop_column("inferences", "department")
    op.add_column("inferences", sa.Column("label", sa.String(64), nullable=False))
    op.add_column("inferences", sa.Column("score", sa.Float(), nullable=False))
    op.create_index("inferences_task_label_idx", "inferences", ["task", "label"])
