"""Signing and sending scenario events with confluent-kafka (the CLI's producer).

Every producer here is idempotent (``enable.idempotence``): librdkafka numbers each message
per partition, so a retry after a lost acknowledgement never writes a message twice, and
ordering within a partition survives retries. Every message gets a delivery report before
``deliver`` returns: delivered (with its partition and offset) or failed (with the broker's
error). Nothing is dropped silently; a failure raises ``DeliveryFailed`` naming how many.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaException, Message, Producer

from config.settings import Settings
from security.keyfiles import SigningKey
from streams.admin import kafka_config
from streams.errors import BrokerUnavailable

#: How long librdkafka keeps retrying one message before reporting it failed. Finite, so
#: ``deliver`` always ends with a report for every message (the default is five minutes).
DELIVERY_TIMEOUT_S = 30.0

#: librdkafka's own log lines (connection refused, retries) go here, not to stderr.
#: The outcome of every message is reported by ``deliver`` itself, so by default they are quiet.
client_log = logging.getLogger("attest.kafka.producer")
client_log.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class OutgoingMessage:
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
class Delivered:
    """Where the broker stored one message (the position consumers will see)."""

    index: int
    partition: int
    offset: int


@dataclass(frozen=True)
class Undelivered:
    """A message the broker did not acknowledge, and why."""

    index: int
    error: str


class DeliveryFailed(BrokerUnavailable):
    """Some messages were not delivered; ``delivered`` and ``failed`` say which."""

    def __init__(self, topic: str, delivered: list[Delivered], failed: list[Undelivered]) -> None:
        self.topic = topic
        self.delivered = delivered
        self.failed = failed
        first = failed[0].error if failed else "no delivery report"
        super().__init__(
            f"{len(failed)} of {len(failed) + len(delivered)} messages were not delivered to "
            f"{topic} ({first}); the {len(delivered)} others were"
        )


def sign_payload(key: SigningKey, payload: dict[str, object], typ: str) -> bytes:
    """The compact JWS of a payload (compact JSON, UTF-8)."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return key.sign(body, typ)


def tamper(token: bytes) -> bytes:
    """Change one payload character after signing: the signature no longer holds."""
    header, payload, signature = token.split(b".")
    i = len(payload) // 2
    flipped = b"A" if payload[i : i + 1] != b"A" else b"B"
    return b".".join((header, payload[:i] + flipped + payload[i + 1 :], signature))


def producer_config(settings: Settings, delivery_timeout_s: float = DELIVERY_TIMEOUT_S) -> dict[str, object]:
    """An idempotent producer: acks from all replicas, retries that never duplicate."""
    return {
        **kafka_config(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": int(delivery_timeout_s * 1000),
        "logger": client_log,
    }


def deliver(
    settings: Settings,
    topic: str,
    messages: Iterable[OutgoingMessage],
    progress: Callable[[int], None] | None = None,
    delivery_timeout_s: float = DELIVERY_TIMEOUT_S,
) -> list[Delivered]:
    """Send every message and wait for every delivery report; return where each landed.

    Raises ``DeliveryFailed`` (a ``BrokerUnavailable``) when any message was not
    acknowledged, after every other message has had its report.
    """
    producer = Producer(producer_config(settings, delivery_timeout_s))
    delivered: list[Delivered] = []
    failed: list[Undelivered] = []
    sent = 0

    def report(index: int) -> Callable[[object, Message], None]:
        def on_delivery(err: object, msg: Message) -> None:
            if err is not None:
                failed.append(Undelivered(index, str(err)))
                return
            delivered.append(Delivered(index, msg.partition(), msg.offset()))
            if progress:
                progress(1)

        return on_delivery

    try:
        for message in messages:
            while True:
                try:
                    producer.produce(topic, key=message.key, value=message.value,
                                     on_delivery=report(sent))
                    break
                except BufferError:
                    producer.poll(0.1)
            sent += 1
            producer.poll(0)
        # message.timeout.ms bounds every message, so this ends with a report for each; the
        # deadline is only a guard against a client that never reports.
        deadline = time.monotonic() + delivery_timeout_s + 30.0
        while producer.flush(1.0) > 0 and time.monotonic() < deadline:
            pass
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot send to {topic}: {exc}") from None
    reported = {d.index for d in delivered} | {f.index for f in failed}
    failed.extend(Undelivered(i, "no delivery report") for i in range(sent) if i not in reported)
    if failed:
        raise DeliveryFailed(topic, sorted(delivered, key=lambda d: d.index),
                             sorted(failed, key=lambda f: f.index))
    return sorted(delivered, key=lambda d: d.index)


def send_all(
    settings: Settings,
    topic: str,
    messages: Iterable[OutgoingMessage],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Send and wait for every delivery report; raise when any message was not delivered."""
    return len(deliver(settings, topic, messages, progress))
