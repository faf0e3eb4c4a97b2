"""Every topic, declared once: its name suffix, partitions and which event schemas it carries."""

from __future__ import annotations

from dataclasses import dataclass

from config.settings import Settings
from schemas.catalog import APPROVAL_V1, DOCUMENT_V1, TRANSACTION_V1


@dataclass(frozen=True)
class TopicSpec:
    """A logical topic. ``partitions=None`` means the configured ``ATTEST_PARTITIONS``."""

    suffix: str
    description: str
    accepted_types: frozenset[str] = frozenset()
    partitions: int | None = None
    #: Topic-level configuration set when Attest creates the topic.
    config: tuple[tuple[str, str], ...] = ()

    def name(self, settings: Settings) -> str:
        return settings.topic(self.suffix)

    def partition_count(self, settings: Settings) -> int:
        return self.partitions or settings.partitions


#: Intake topics: the broker stamps each record with its own clock (freshness of issued_at
#: is judged against it, docs/events.md); brokers that ignore the setting (the embedded
#: Tansu) keep the producer's create time.
_INTAKE_CONFIG = (("message.timestamp.type", "LogAppendTime"),)

TRANSACTIONS = TopicSpec(
    "transactions", "Signed payments from ledgers, switches and statements",
    frozenset({TRANSACTION_V1}), config=_INTAKE_CONFIG,
)
DOCUMENTS = TopicSpec(
    "documents", "Signed documents from agencies", frozenset({DOCUMENT_V1}), config=_INTAKE_CONFIG,
)
APPROVALS = TopicSpec(
    "approvals", "Signed approvals of data-sharing requests", frozenset({APPROVAL_V1}),
    config=_INTAKE_CONFIG,
)
AUDIT = TopicSpec("audit", "One attest.audit.v1 record per decision")
DEAD_LETTER = TopicSpec(
    "dead-letter", "Rejected messages: original bytes, reason code in the headers"
)
RECONCILIATION = TopicSpec("reconciliation", "Matches and breaks across sources")

#: Topics whose messages are signed events and go through the one verification path.
INTAKE_TOPICS = (TRANSACTIONS, DOCUMENTS, APPROVALS)
ALL_TOPICS = (TRANSACTIONS, DOCUMENTS, APPROVALS, AUDIT, DEAD_LETTER, RECONCILIATION)


def group_id(settings: Settings, role: str) -> str:
    """The consumer group of a worker stage: each stage keeps its own offsets and its own lag."""
    return settings.app_id if role == "intake" else f"{settings.app_id}-{role}"


def stage_topics(settings: Settings) -> dict[str, list[str]]:
    """Which topics each stage's consumer group reads (docs/architecture.md)."""
    intake = [spec.name(settings) for spec in INTAKE_TOPICS]
    inferred = [TRANSACTIONS.name(settings), DOCUMENTS.name(settings)]
    return {"intake": intake, "audit": [AUDIT.name(settings)], "enrichment": inferred,
            "reconciliation": inferred}
