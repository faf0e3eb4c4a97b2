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
    #: The ``Settings`` field holding this topic's ``retention.ms`` (None: the broker's default).
    retention_setting: str | None = None

    def name(self, settings: Settings) -> str:
        return settings.topic(self.suffix)

    def partition_count(self, settings: Settings) -> int:
        return self.partitions or settings.partitions

    def topic_config(self, settings: Settings) -> dict[str, str]:
        """What the topic is created with: ``config`` plus its explicit ``retention.ms``.

        Explicit because the broker's default is a deployment accident: intake topics hold
        the original bytes that replays, `dlq retry` and the log probe read back, and (for
        plain tokens) every restricted field in clear, so how long is a stated decision
        (docs/operations.md, "Retention").
        """
        config = dict(self.config)
        if self.retention_setting is not None:
            config["retention.ms"] = str(int(getattr(settings, self.retention_setting)))
        return config


#: Intake topics: the broker stamps each record with its own clock (freshness of issued_at
#: is judged against it, docs/events.md); brokers that ignore the setting (the embedded
#: Tansu) keep the producer's create time.
_INTAKE_CONFIG = (("message.timestamp.type", "LogAppendTime"),)
_INTAKE_RETENTION = "intake_retention_ms"

TRANSACTIONS = TopicSpec(
    "transactions", "Signed payments from ledgers, switches and statements",
    frozenset({TRANSACTION_V1}), config=_INTAKE_CONFIG, retention_setting=_INTAKE_RETENTION,
)
DOCUMENTS = TopicSpec(
    "documents", "Signed documents from agencies", frozenset({DOCUMENT_V1}), config=_INTAKE_CONFIG,
    retention_setting=_INTAKE_RETENTION,
)
APPROVALS = TopicSpec(
    "approvals", "Signed approvals of data-sharing requests", frozenset({APPROVAL_V1}),
    config=_INTAKE_CONFIG, retention_setting=_INTAKE_RETENTION,
)
AUDIT = TopicSpec("audit", "One attest.audit.v1 record per decision",
                  retention_setting="audit_retention_ms")
DEAD_LETTER = TopicSpec(
    "dead-letter", "Rejected messages: original bytes, reason code in the headers",
    retention_setting="dead_letter_retention_ms",
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
