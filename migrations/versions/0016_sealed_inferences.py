"""Inference labels sealed like their source fields; keyed message hash (issue 14, item 7).

Placeholder reserved for work in progress; it changes nothing yet.

Revision ID: 0016_sealed_inferences
Revises: 0015_kek_rotation
"""

from __future__ import annotations

revision = "0016_sealed_inferences"
down_revision = "0015_kek_rotation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
