"""Key binding: the schemas (``typ``) and the department or agency a signing key may speak for.

Issue 14, item 6: a ``core-ledger`` key signed a document with ``agency: tax-bureau`` and it
was stored in the tax bureau's view. ``allowed_typs`` (NULL: any schema) and ``department``
(NULL: any department) are nullable so that keys registered before this revision keep
working as they did; the verifier refuses an event outside a key's binding as
``scope_mismatch`` (docs/events.md, "Key binding").

Revision ID: 0010_signing_key_scope
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0010_signing_key_scope"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("signing_keys", sa.Column("allowed_typs", ARRAY(sa.String(64)), nullable=True))
    op.add_column("signing_keys", sa.Column("department", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("signing_keys", "department")
    op.drop_column("signing_keys", "allowed_typs")
