"""Topic creation with confluent-kafka's admin client, so producers never rely on auto-create."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from config.settings import Settings
from streams.errors import BrokerUnavailable
from streams.kafka_security import confluent_security, load_kafka_security
from streams.topics import ALL_TOPICS


def kafka_config(settings: Settings) -> dict[str, object]:
    """Client settings shared by every confluent-kafka producer, consumer and admin.

    The security part (protocol, SCRAM login, CA) comes from streams/kafka_security.py, the
    one place that also builds the Faust workers' credentials.
    """
    return {"bootstrap.servers": settings.kafka_bootstrap, "client.id": "attest-cli",
            **confluent_security(load_kafka_security(settings))}


def ensure_topics(settings: Settings, timeout_s: float = 15.0) -> list[str]:
    """Create any missing topic with its partition count; return the names created."""
    admin = AdminClient(kafka_config(settings))
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc.args[0].str()})"
        ) from None
    wanted = [
        NewTopic(spec.name(settings), spec.partition_count(settings), settings.replication_factor,
                 config=spec.topic_config(settings))
        for spec in ALL_TOPICS
        if spec.name(settings) not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerUnavailable(f"cannot create topic {name}: {exc.args[0].str()}") from None
    return created
