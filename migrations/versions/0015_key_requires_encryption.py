"""A signing key may require encryption: its tokens are accepted only inside a JWE.

Review finding: "this source must encrypt on the wire" was only the worker's environment
variable ``ATTEST_ENCRYPTED_SOURCES``. ``attest replay`` and ``attest dlq retry`` build their
own intake from the operator's settings, so a plain token the worker dead-lettered as
``encryption_required`` was stored when the operator's environment lacked the variable. The
rule now lives in the key registry, which every path loads: ``encrypted_only`` true means a
plain (unencrypted) JWS signed by this key is refused as ``encryption_required``
(docs/events.md, "Which keys must encrypt"). Set with ``attest keys generate / add / import
--require-encryption`` and ``attest keys require-encryption KID [--off]``.

NOT NULL with default false: keys registered before keep accepting both forms, as they did
where the variable was unset. The worker's login reads ``signing_keys`` with a table-wide
SELECT (0009_worker_grants), which covers the new column; no grant changes.

(This revision was reserved as the no-op placeholder ``0015_kek_rotation``, never filled.)

Revision ID: 0015_key_requires_encryption
Revises: 0014_audit_signers
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_key_requires_encryption"
down_revision = "0014_audit_signers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("signing_keys", sa.Column("encrypted_only", sa.Boolean(), nullable=False,
                                            server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("signing_keys", "encrypted_only")
