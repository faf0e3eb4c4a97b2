"""One approval key per person, held by the database: a unique index on the key's subject.

The access service refused a second key per person by looking first and inserting after, so
concurrent ``PUT /v1/me/approval-key`` calls could each find none and each insert one (a
review reproduced six keys for one person). The plain index of migration 0006 becomes a
unique one; the service maps the conflict to 409.

A database that already holds several keys for one person is **refused, not repaired**: which
of them is the person's own is for an operator to decide (the newest may as well be a key added
with a stolen token, and removing a key voids the decisions signed with it). The upgrade stops
with a message naming those people and changes nothing (the DDL runs in the migration's
transaction); delete the keys that are not theirs, then upgrade again::

    SELECT subject, kid, registered_at FROM access_approver_keys
     WHERE subject IN (SELECT subject FROM access_approver_keys
                        GROUP BY subject HAVING count(*) > 1)
     ORDER BY subject, registered_at;

Revision ID: 0013_approver_key_unique
Revises: 0012_recon_fields
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_approver_key_unique"
down_revision = "0012_recon_fields"
branch_labels = None
depends_on = None

TABLE = "access_approver_keys"
OLD_INDEX = "access_approver_keys_subject_idx"
UNIQUE_INDEX = "access_approver_keys_subject_key"


class DuplicateApproverKeys(RuntimeError):
    """Some people hold several approval keys; an operator must choose which one stays."""


def upgrade() -> None:
    duplicates = op.get_bind().execute(sa.text(
        f"SELECT subject, count(*) FROM {TABLE} GROUP BY subject HAVING count(*) > 1 "  # noqa: S608
        "ORDER BY subject")).all()
    if duplicates:
        people = ", ".join(f"{subject} ({count} keys)" for subject, count in duplicates)
        raise DuplicateApproverKeys(
            f"migration 0013 needs one approval key per person, and these people have several: "
            f"{people}. Delete the keys that are not theirs from {TABLE} (see this migration's "
            f"docstring for the query), then run the upgrade again; nothing was changed.")
    op.create_index(UNIQUE_INDEX, TABLE, ["subject"], unique=True)
    op.drop_index(OLD_INDEX, table_name=TABLE)


def downgrade() -> None:
    op.create_index(OLD_INDEX, TABLE, ["subject"])
    op.drop_index(UNIQUE_INDEX, table_name=TABLE)
