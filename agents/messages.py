"""What agents pass around: an incoming Kafka message, and what a batch wants sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from schemas.audit import AuditRecord
from security.verification import VerifiedEvent


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One Kafka record as consumed: position, key and the untouched value bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    received_at: datetime
    #: The broker's timestamp of the record (log-append time where the broker sets it,
    #: else the producer's create time); None when the broker gave none.
    broker_time: datetime | None = None

    @property
    def position(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected message bound for the dead-letter topic, original bytes unchanged."""

    message: IncomingMessage
    reason: str
    detail: str
    rejected_at: datetime

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("attest-reason", self.reason.encode()),
            ("attest-detail", self.detail.encode("utf-8", "replace")[:1024]),
            ("attest-source-topic", self.message.topic.encode()),
            ("attest-source-partition", str(self.message.partition).encode()),
            ("attest-source-offset", str(self.message.offset).encode()),
            ("attest-rejected-at", self.rejected_at.isoformat().encode()),
        ]


@dataclass
class BatchOutput:
    """Everything one processed batch must publish before its offsets may move."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    audit: list[AuditRecord] = field(default_factory=list)
    stored: int = 0
    #: Events accepted and stored in this batch, for the stages after intake (inference).
    accepted: list[tuple[IncomingMessage, VerifiedEvent]] = field(default_factory=list)
