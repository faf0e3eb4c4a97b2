"""Tables of field-level encryption (migration 0003), on the same ``Base`` as storage.models.

* ``tier_wrapping_keys``: writers' wrapping keys, each sealed to a tier's key-encryption key.
* ``data_keys``: per-subject, per-tier data keys, wrapped; a destroyed key keeps its row with
  ``wrapped`` NULL and ``destroyed_at`` set (crypto-shredding leaves a tombstone, so a read can
  say "forgotten" rather than "corrupt").
* ``transaction_fields``, ``document_fields``, ``approval_fields``: one row per stored event,
  one ``bytea`` column per protected field (AES-GCM ciphertext), ``<field>_bidx`` blind
  indexes, and the public ``department`` that row-level security filters on. Public fields stay
  in ``events.payload``. Columns must match ``schemas/tiers.yaml`` (checked by the tests).
* ``data_key_shredding``: one counter that ``attest forget`` advances; writers read it under a
  share lock, so no key is destroyed while a batch using it is stored.
* ``department_row_access``: which row owners each department's Postgres role may see.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base

TIER_CHECK = "tier IN ('internal', 'confidential', 'restricted')"


class TierWrappingKeyRow(Base):
    """A writer's wrapping key, sealed to its tier's key-encryption key ``kek_version``."""

    __tablename__ = "tier_wrapping_keys"
    __table_args__ = (
        CheckConstraint(TIER_CHECK, name="tier_wrapping_keys_tier"),
        Index("tier_wrapping_keys_tier_version_idx", "tier", "kek_version"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tier: Mapped[str] = mapped_column(String(16))
    kek_version: Mapped[int] = mapped_column(Integer)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    rewrapped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DataKeyRow(Base):
    """A data key of one subject and tier, wrapped; NULL ``wrapped`` once destroyed."""

    __tablename__ = "data_keys"
    __table_args__ = (
        CheckConstraint(TIER_CHECK, name="data_keys_tier"),
        CheckConstraint("(destroyed_at IS NULL) = (wrapped IS NOT NULL)", name="data_keys_destroyed"),
        Index("data_keys_subject_idx", "subject_ref"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tier: Mapped[str] = mapped_column(String(16))
    subject_domain: Mapped[str] = mapped_column(String(32))
    subject_ref: Mapped[bytes | None] = mapped_column(LargeBinary)
    wrapping_key_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    destroyed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


def _event_id() -> Mapped[uuid.UUID]:
    """The events row's id (no foreign key: see migration 0003 for why)."""
    return mapped_column(UUID(as_uuid=True), primary_key=True)


class TransactionFieldsRow(Base):
    """Protected fields of an ``attest.transaction.v1`` event."""

    __tablename__ = "transaction_fields"
    __table_args__ = (
        Index("transaction_fields_account_bidx_idx", "account_bidx"),
    )

    event_id: Mapped[uuid.UUID] = _event_id()
    department: Mapped[str] = mapped_column(String(64))
    reference: Mapped[bytes | None] = mapped_column(LargeBinary)
    value_date: Mapped[bytes | None] = mapped_column(LargeBinary)
    entry_date: Mapped[bytes | None] = mapped_column(LargeBinary)
    direction: Mapped[bytes | None] = mapped_column(LargeBinary)
    amount: Mapped[bytes | None] = mapped_column(LargeBinary)
    counterparty: Mapped[bytes | None] = mapped_column(LargeBinary)
    memo: Mapped[bytes | None] = mapped_column(LargeBinary)
    account: Mapped[bytes | None] = mapped_column(LargeBinary)
    account_bidx: Mapped[bytes | None] = mapped_column(LargeBinary)


class DocumentFieldsRow(Base):
    """Protected fields of an ``attest.document.v1`` event."""

    __tablename__ = "document_fields"
    __table_args__ = (Index("document_fields_subject_id_bidx_idx", "subject_id_bidx"),)

    event_id: Mapped[uuid.UUID] = _event_id()
    department: Mapped[str] = mapped_column(String(64))
    document_id: Mapped[bytes | None] = mapped_column(LargeBinary)
    title: Mapped[bytes | None] = mapped_column(LargeBinary)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    subject_id: Mapped[bytes | None] = mapped_column(LargeBinary)
    insurance_status: Mapped[bytes | None] = mapped_column(LargeBinary)
    income: Mapped[bytes | None] = mapped_column(LargeBinary)
    tax_paid: Mapped[bytes | None] = mapped_column(LargeBinary)
    contribution_base: Mapped[bytes | None] = mapped_column(LargeBinary)
    subject_id_bidx: Mapped[bytes | None] = mapped_column(LargeBinary)


class ApprovalFieldsRow(Base):
    """Protected fields of an ``attest.approval.v1`` event."""

    __tablename__ = "approval_fields"

    event_id: Mapped[uuid.UUID] = _event_id()
    department: Mapped[str] = mapped_column(String(64))
    reason: Mapped[bytes | None] = mapped_column(LargeBinary)


class DataKeyShreddingRow(Base):
    """One row: how many times ``attest forget`` ran (the writers' cache epoch)."""

    __tablename__ = "data_key_shredding"
    __table_args__ = (CheckConstraint("id = 1", name="data_key_shredding_one_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger, server_default="0")


class DepartmentRowAccessRow(Base):
    """Row owners (agency or source; ``*`` for all) a department's Postgres role may read."""

    __tablename__ = "department_row_access"

    db_role: Mapped[str] = mapped_column(String(63), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), primary_key=True)


#: The protected-fields table of each table name used in schemas/tiers.yaml.
FIELD_TABLES: dict[str, Table] = {
    row.__table__.name: row.__table__  # type: ignore[attr-defined]
    for row in (TransactionFieldsRow, DocumentFieldsRow, ApprovalFieldsRow)
}


# -- the access service's state (migration 0006) ---------------------------------------------


class AccessRequestRow(Base):
    """A data-sharing request: who asks, for what purpose, which subject and fields, until when."""

    __tablename__ = "access_requests"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    requester: Mapped[str] = mapped_column(String(128), index=True)
    department: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(Text)
    typ: Mapped[str] = mapped_column(String(64))
    subject_domain: Mapped[str] = mapped_column(String(32))
    subject_ref: Mapped[bytes] = mapped_column(LargeBinary)
    fields: Mapped[list[str]] = mapped_column(JSONB)
    level: Mapped[int] = mapped_column(SmallInteger)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    digest: Mapped[str] = mapped_column(String(64))


class ApproverKeyRow(Base):
    """A person's approval-signing public key, with the access service's attestation of it."""

    __tablename__ = "access_approver_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(String(128), unique=True)  # migration 0013: one key per person
    jwk: Mapped[dict[str, Any]] = mapped_column(JSONB)
    attestation: Mapped[str] = mapped_column(Text)
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ApprovalRow(Base):
    """One approver's decision on one request: their JWS and the service's attestation."""

    __tablename__ = "access_approvals"
    __table_args__ = (
        CheckConstraint("decision IN ('approve', 'deny')", name="access_approvals_decision"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    request_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    approver: Mapped[str] = mapped_column(String(128))
    decision: Mapped[str] = mapped_column(String(16))
    approver_kid: Mapped[str] = mapped_column(String(64))
    approver_department: Mapped[str] = mapped_column(String(64))
    approver_roles: Mapped[list[str]] = mapped_column(JSONB)
    jws: Mapped[str] = mapped_column(Text)
    attestation: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
