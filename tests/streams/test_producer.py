"""The CLI's producer: idempotent, and every message ends delivered (with its position) or
reported as failed, never silently dropped."""

from __future__ import annotations

import uuid

import pytest

from config.settings import Settings
from devstack.processes import choose_port
from streams.admin import ensure_topics
from streams.producer import DeliveryFailed, OutgoingMessage, deliver, producer_config
from streams.topics import TRANSACTIONS
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration


def test_producer_is_idempotent_with_acks_from_all_replicas() -> None:
    config = producer_config(Settings(kafka_bootstrap="127.0.0.1:1"))
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"


def test_every_message_is_delivered_once_at_the_position_reported(stack_settings: Settings) -> None:
    settings = stack_settings.model_copy(update={"topic_prefix": f"p{uuid.uuid4().hex[:6]}."})
    ensure_topics(settings)
    topic = TRANSACTIONS.name(settings)
    messages = [OutgoingMessage(f"k{i % 7}".encode(), f"value-{i}".encode()) for i in range(2000)]
    delivered = deliver(settings, topic, messages)
    assert [d.index for d in delivered] == list(range(len(messages)))
    read = {(m.partition(), m.offset()): m.value() for m in read_topic(settings, topic)}
    assert len(read) == len(messages)
    assert {(d.partition, d.offset): messages[d.index].value for d in delivered} == read


def test_an_unreachable_broker_is_reported_for_every_message() -> None:
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{choose_port(0)}")
    with pytest.raises(DeliveryFailed) as caught:
        deliver(settings, "nowhere", [OutgoingMessage(None, b"x")] * 5, delivery_timeout_s=1.0)
    assert len(caught.value.failed) == 5
    assert caught.value.delivered == []
    assert "5 of 5 messages were not delivered to nowhere" in str(caught.value)
