"""How far a consumer group has committed: the enrichment stage never runs ahead of intake."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition

from config.settings import Settings
from streams.admin import kafka_config
from streams.errors import BrokerUnavailable


class CommittedOffsets:
    """Reads (never writes) a group's committed offsets; does not join the group.

    A consumer that never subscribes can ask the group coordinator for committed offsets
    without taking part in the group's rebalances.
    """

    def __init__(self, settings: Settings, group: str, timeout_s: float = 10.0) -> None:
        self._timeout_s = timeout_s
        self._consumer = Consumer({
            **kafka_config(settings),
            "group.id": group,
            "client.id": f"attest-offsets-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        })

    def committed(self, positions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The next offset the group will read, per (topic, partition); -1 when none."""
        try:
            found = self._consumer.committed(
                [TopicPartition(topic, partition) for topic, partition in positions],
                timeout=self._timeout_s,
            )
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot read committed offsets: {exc.args[0].str()}") from None
        return {(tp.topic, tp.partition): tp.offset for tp in found}

    def close(self) -> None:
        self._consumer.close()
