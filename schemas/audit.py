"""``attest.audit.v1``: the unit of accountability, one record per decision.

An audit id is derived from what the decision is about (action, correlation id and the
source position), so the same decision taken again after a redelivery has the same id and
is stored once.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from security.signatures import b64url_decode

_NAMESPACE = uuid.UUID("5b0c2f52-3c55-4f0b-9a55-7d0f3c1c2a11")


class AuditAction(StrEnum):
    """Every audit action, in one place (docs/events.md lists what each means).

    A ``StrEnum``, so records carry the plain string on the wire and in the table, and a
    new action is one line here plus one row in docs/events.md.
    """

    EVENT_ACCEPTED = "event.accepted"
    EVENT_STORED = "event.stored"
    EVENT_REJECTED = "event.rejected"
    EVENT_INFERRED = "event.inferred"
    AUDIT_CHECKPOINT = "audit.checkpoint"
    AUDIT_CONFLICT = "audit.conflict"
    AUDIT_KEY_PINNED = "audit.key_pinned"
    AUDIT_FORGED = "audit.forged"
    AUDIT_SIGNER_ADDED = "audit.signer_added"
    AUDIT_SIGNER_REVOKED = "audit.signer_revoked"
    KEY_ADDED = "key.added"
    KEY_REVOKED = "key.revoked"
    KEY_ENCRYPTION_CHANGED = "key.encryption_changed"
    KEY_ROTATED = "key.rotated"
    KEK_RETIRED = "key.kek_retired"
    KEYRING_CREATED = "keyring.created"
    FIELDS_READ = "fields.read"
    SUBJECT_FORGOTTEN = "subject.forgotten"
    ACCESS_REQUESTED = "access.requested"
    ACCESS_APPROVED = "access.approved"
    ACCESS_DENIED = "access.denied"
    APPROVER_KEY_REGISTERED = "access.key_registered"
    REPLAY_STARTED = "replay.started"
    REPLAY_FINISHED = "replay.finished"
    DLQ_RETRY_STARTED = "dlq.retry_started"
    DLQ_RETRIED = "dlq.retried"
    DLQ_PAYLOAD_SHOWN = "dlq.payload_shown"
    RECON_MATCHED = "recon.matched"
    RECON_SUGGESTED = "recon.suggested"
    RECON_BREAK = "recon.break"
    RECON_CONFIRMED = "recon.confirmed"
    RECON_REJECTED = "recon.rejected"
    RECON_INCONSISTENT = "recon.inconsistent"


def audit_id_for(action: str, *parts: object) -> str:
    """A deterministic id for one decision about one thing."""
    return str(uuid.uuid5(_NAMESPACE, json.dumps([action, *map(str, parts)])))


class AuditRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    audit_id: str
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    actor: str
    action: str
    outcome: Literal["ok", "rejected", "error"] = "ok"
    reason: str | None = None
    correlation_id: str | None = None
    subject_ids: list[str] = Field(default_factory=list)
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    detail: dict[str, Any] = Field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> AuditRecord:
        return cls.model_validate_json(data)


#: Most records in one audit-topic message. A worker's batch of events becomes a few audit
#: messages instead of two or three per event (one produce and one consume per message was
#: most of the pipeline's per-event cost), and each stays far below Kafka's 1 MiB default.
AUDIT_BATCH_MAX = 250

_BATCH_PREFIX = b'{"records":['


class AuditBatch(BaseModel):
    """Several audit records in one audit-topic message: ``{"records": [...]}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    records: list[AuditRecord] = Field(min_length=1)


def encode_batches(records: list[AuditRecord], size: int = AUDIT_BATCH_MAX) -> list[bytes]:
    """Audit-topic message values for ``records``, at most ``size`` records each."""
    return [
        _BATCH_PREFIX + b",".join(r.to_bytes() for r in records[i:i + size]) + b"]}"
        for i in range(0, len(records), size)
    ]


def parse_records(payload: bytes) -> list[AuditRecord]:
    """Every record of an unsigned message value, a batch or a single record (operator tools
    publish single records). Raises pydantic's ``ValidationError`` for anything else.

    The audit sink calls this on the payload of a *verified* message (``audit.signing``).
    """
    if payload[:16].lstrip().startswith(b'{"records"'):
        return AuditBatch.model_validate_json(payload).records
    return [AuditRecord.from_bytes(payload)]


def records_in(value: bytes) -> list[AuditRecord]:
    """Every record of one audit-topic message as a *reader* sees it: a signed message
    (JWS compact, docs/audit.md) is unwrapped **without verifying** its signature, an
    unsigned one read as is. For display and look-ups (``attest audit tail``, tests); what is
    genuine is decided by the sink alone. Raises pydantic's ``ValidationError``."""
    return parse_records(_payload_of(value))


def _payload_of(value: bytes) -> bytes:
    """The payload of a JWS compact value (unverified), or ``value`` when it is not one."""
    if value[:16].lstrip().startswith(b"{"):
        return value
    parts = value.split(b".")
    if len(parts) != 3:
        return value
    try:
        return b64url_decode(parts[1])
    except ValueError:
        return value
