"""Audit-signing keys of the components that publish to the audit topic (issue 14, item 4).

Placeholder reserved for work in progress; it changes nothing yet.

Revision ID: 0014_audit_signers
Revises: 0013_approver_key_unique
"""

from __future__ import annotations

revision = "0014_audit_signers"
down_revision = "0013_approver_key_unique"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
