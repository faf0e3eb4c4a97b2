"""Signing and sending scenario events with confluent-kafka (the CLI's producer)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaException, Producer

from config.settings import Settings
from security.keyfiles import SigningKey
from streams.admin import kafka_config
from streams.errors import BrokerUnavailable


@dataclass(frozen=True)
class OutgoingMessage:
    key: bytes | None
    value: bytes


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


def send_all(
    settings: Settings,
    topic: str,
    messages: Iterable[OutgoingMessage],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Send and wait for every delivery report; raise when any message was not delivered."""
    producer = Producer({**kafka_config(settings), "acks": "all", "linger.ms": 5,
                         "enable.idempotence": False})
    errors: list[str] = []
    sent = 0

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))
        elif progress:
            progress(1)

    try:
        for message in messages:
            while True:
                try:
                    producer.produce(topic, key=message.key, value=message.value,
                                     on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.1)
            sent += 1
            producer.poll(0)
        remaining = producer.flush(30)
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot send to {topic}: {exc}") from None
    if remaining or errors:
        raise BrokerUnavailable(
            f"{len(errors) + remaining} of {sent} messages were not delivered to {topic}"
            + (f" ({errors[0]})" if errors else "")
        )
    return sent
