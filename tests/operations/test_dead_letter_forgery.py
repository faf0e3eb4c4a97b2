"""A dead letter's headers are only what someone wrote on the dead-letter topic.

Review finding: ``attest dlq retry`` trusted the claimed source position and skipped the
issued_at window, so anyone with produce rights on the dead-letter topic and a producer key
could store an event the live path refuses as ``stale``. A retry now keeps the window,
judged at the original arrival when the intake topic still holds these exact bytes at the
claimed position, and at the time of the retry otherwise.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer

from config.settings import Settings
from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from security.keyfiles import generate_key
from storage import keys as registry
from storage.events import count_events
from streams.admin import ensure_topics
from streams.producer import producer_config, sign_payload
from streams.topics import DEAD_LETTER, TRANSACTIONS
from tests.support.workers import settings_env

pytestmark = pytest.mark.integration


def _send(settings: Settings, topic: str, value: bytes, *, headers: list[tuple[str, bytes]] | None = None,
          at: datetime | None = None) -> tuple[int, int]:
    """Produce one message (optionally with a CreateTime of ``at``); return (partition, offset)."""
    producer = Producer(producer_config(settings))
    landed: list[tuple[int, int]] = []
    extra = {"timestamp": int(at.timestamp() * 1000)} if at else {}
    producer.produce(topic, value, key=b"k", headers=headers or [],
                     on_delivery=lambda err, msg: landed.append((msg.partition(), msg.offset())),
                     **extra)
    producer.flush(30)
    assert len(landed) == 1
    return landed[0]


def _letter_headers(source_topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [("attest-reason", b"unknown_key"), ("attest-detail", b"no such key"),
            ("attest-source-topic", source_topic.encode()),
            ("attest-source-partition", str(partition).encode()),
            ("attest-source-offset", str(offset).encode()),
            ("attest-rejected-at", datetime.now(UTC).isoformat().encode())]


def test_a_forged_letter_cannot_carry_a_stale_event_past_the_window_but_a_real_old_one_can(
    stack_settings: Settings,
) -> None:
    own = stack_settings.model_copy(update={"topic_prefix": f"dlq{uuid.uuid4().hex[:6]}."})
    ensure_topics(own)
    key = generate_key(f"dlq-{uuid.uuid4().hex[:6]}")
    registry.add_key(own.database_url, key.kid, key.source, key.alg, key.public_jwk)
    intake, letters = TRANSACTIONS.name(own), DEAD_LETTER.name(own)
    now = datetime.now(UTC)

    # A genuine letter: the event reached the intake topic two hours ago, fresh then.
    two_hours_ago = now - timedelta(hours=2)
    (old,) = transaction_payloads(1, key.source, now=two_hours_ago)
    old_token = sign_payload(key, old, TRANSACTION_V1)
    partition, offset = _send(own, intake, old_token, at=two_hours_ago)
    _send(own, letters, old_token, headers=_letter_headers(intake, partition, offset))

    # A forgery: an event dated a month ahead, on the dead-letter topic only, claiming a
    # position of the intake topic that holds nothing.
    (future,) = transaction_payloads(1, key.source, now=now + timedelta(days=30))
    _send(own, letters, sign_payload(key, future, TRANSACTION_V1),
          headers=_letter_headers(intake, 0, 10**9))

    retry = subprocess.run(
        [sys.executable, "-m", "cli.main", "dlq", "retry", "--reason", "unknown_key",
         "--source", key.source, "--why", "forgery test"],
        env=settings_env(own), capture_output=True, text=True, timeout=240, check=False)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert count_events(own.database_url, [future["event_id"]]) == 0, retry.stdout
    assert count_events(own.database_url, [old["event_id"]]) == 1, retry.stdout
