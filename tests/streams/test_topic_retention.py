"""Intake, dead-letter and audit topics are created with an explicit retention.ms (issue 14, 3)."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from config.settings import Settings
from streams.admin import ensure_topics, kafka_config
from streams.topics import ALL_TOPICS, AUDIT, DEAD_LETTER, INTAKE_TOPICS, RECONCILIATION

WEEK_MS = 7 * 24 * 3600 * 1000


def test_retention_comes_from_settings() -> None:
    settings = Settings(intake_retention_ms=3_600_000, dead_letter_retention_ms=7_200_000)
    for spec in INTAKE_TOPICS:
        config = spec.topic_config(settings)
        assert config["retention.ms"] == "3600000"
        assert config["message.timestamp.type"] == "LogAppendTime"
    assert DEAD_LETTER.topic_config(settings)["retention.ms"] == "7200000"
    assert AUDIT.topic_config(settings)["retention.ms"] == "-1"
    assert "retention.ms" not in RECONCILIATION.topic_config(settings)
    defaults = Settings()
    assert {spec.topic_config(defaults).get("retention.ms") for spec in INTAKE_TOPICS} == {str(WEEK_MS)}
    # Dead letters are retried from the intake original: intake must not expire first.
    assert defaults.intake_retention_ms >= defaults.dead_letter_retention_ms


@pytest.mark.integration
def test_the_embedded_broker_takes_the_retention_it_is_given(stack_settings: Settings) -> None:
    settings = stack_settings.model_copy(update={
        "topic_prefix": f"r{uuid.uuid4().hex[:6]}.", "intake_retention_ms": 3_600_000,
        "dead_letter_retention_ms": 1_800_000})
    created = set(ensure_topics(settings))
    assert created == {spec.name(settings) for spec in ALL_TOPICS}
    admin = AdminClient(kafka_config(settings))
    resources = [ConfigResource(ResourceType.TOPIC, spec.name(settings))
                 for spec in (*INTAKE_TOPICS, DEAD_LETTER)]
    described = {r.name: f.result(timeout=15)
                 for r, f in admin.describe_configs(resources).items()}
    reported = {name: (entries["retention.ms"].value if "retention.ms" in entries else None)
                for name, entries in described.items()}
    print("retention.ms reported by the broker:", reported)
    assert reported[DEAD_LETTER.name(settings)] == "1800000"
    assert all(reported[spec.name(settings)] == "3600000" for spec in INTAKE_TOPICS)
