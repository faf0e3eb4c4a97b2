"""Columns for two optional protected fields the reconciliation reads (issue 12).

``attest.transaction.v1`` gains ``entry_date`` (a bank statement line's booking date, tier
internal, as ``value_date``) and ``attest.document.v1`` gains ``contribution_base`` (the
income a contribution record was assessed on, tier restricted, as ``income``): the statement
importer sends the one, the consistency rule ``income_differs_from_contribution_base`` reads
the other. Both are optional in the schemas, so producers that do not send them keep
working. The writer role inserts whole rows (migration 0003); no department role is granted
the new columns, as no policy lets a role read them yet.

Revision ID: 0012_recon_fields
Revises: 0011_recon_breaks_read
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_recon_fields"
down_revision = "0011_recon_breaks_read"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("transaction_fields", sa.Column("entry_date", sa.LargeBinary(), nullable=True))
    op.add_column("document_fields", sa.Column("contribution_base", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column("document_fields", "contribution_base")
    op.drop_column("transaction_fields", "entry_date")
