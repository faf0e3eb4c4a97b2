"""The tables, as SQLAlchemy 2.0 declarative models. Alembic migrations create them.

The layout is documented for auditors in docs/storage.md; change both together.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    false,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class SigningKeyRow(Base):
    """A registered public key. Revocation sets ``revoked_at``; rows are never deleted."""

    __tablename__ = "signing_keys"
    __table_args__ = (CheckConstraint("alg IN ('Ed25519', 'ES256')", name="signing_keys_alg"),)

    kid: Mapped[str] = mapped_column(String(200), primary_key=True)
    source: Mapped[str] = mapped_column(String(64), index=True)
    alg: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSONB)
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    not_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    # Migration 0010_signing_key_scope: NULL is "any" (keys registered before the binding).
    allowed_typs: Mapped[list[str] | None] = mapped_column(ARRAY(String(64)))
    department: Mapped[str | None] = mapped_column(String(64))
    # Migration 0015_key_requires_encryption: its tokens are accepted only inside a JWE.
    encrypted_only: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)


class EventRow(Base):
    """One accepted event, stored once (event_id is the idempotency key)."""

    __tablename__ = "events"

    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    typ: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64), index=True)
    kid: Mapped[str] = mapped_column(String(200))
    topic: Mapped[str] = mapped_column(String(255))
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    verified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: Unkeyed SHA-256 of the Kafka message: rows stored before migration 0016 only.
    message_sha256: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: HMAC-SHA256 of the message's SHA-256 under the worker's message MAC key (migration
    #: 0016, ``protection.blind_index.message_mac``): what tells a redelivery from a replay.
    message_mac: Mapped[bytes | None] = mapped_column(LargeBinary)


class AuditLogRow(Base):
    """One audit record, hash-chained (docs/audit.md); ``audit_id`` makes appends idempotent.

    Append-only: triggers refuse UPDATE, DELETE and TRUNCATE (migration 0002). ``seq`` is
    assigned by the appender (gapless, under an advisory lock), not by the sequence.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("audit_log_correlation_idx", "correlation_id"),
        Index("audit_log_action_time_idx", "action", "time"),
        Index("audit_log_actor_time_idx", "actor", "time"),
        Index("audit_log_time_idx", "time"),
        Index("audit_log_subjects_idx", "subject_ids", postgresql_using="gin"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    audit_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    correlation_id: Mapped[str | None] = mapped_column(String(200))
    subject_ids: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    source_topic: Mapped[str | None] = mapped_column(String(255))
    source_partition: Mapped[int | None] = mapped_column(Integer)
    source_offset: Mapped[int | None] = mapped_column(BigInteger)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    recorded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpointRow(Base):
    """A signed checkpoint of the audit chain: the head hash after ``last_seq`` rows."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    count: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
    checkpoint: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
