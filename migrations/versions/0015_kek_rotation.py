"""KEK rotation mints new wrapping keys (issue 14, item 8).

Placeholder reserved for work in progress; it changes nothing yet.

Revision ID: 0015_kek_rotation
Revises: 0014_audit_signers
"""

from __future__ import annotations

revision = "0015_kek_rotation"
down_revision = "0014_audit_signers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
