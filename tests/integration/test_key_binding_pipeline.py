"""Issue 14, item 6 through a real worker: a key speaks only for its schemas and department.

A ``core-ledger`` key bound to transactions and to its own department signs a document with
``agency: tax-bureau``: the worker dead-letters it as ``scope_mismatch`` and stores nothing,
while the same key's transactions are stored.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import text

from audit.queries import find_records
from config.settings import Settings
from scenarios.finance import transaction_payloads
from scenarios.government import TAX_BUREAU, document_payloads
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from security.keyfiles import SigningKey, generate_key
from storage import keys as registry
from storage.db import engine_for
from streams.admin import ensure_topics
from streams.producer import OutgoingMessage, send_all
from streams.topics import DEAD_LETTER, DOCUMENTS, TRANSACTIONS

pytestmark = pytest.mark.integration

T = TypeVar("T")


def _wait(probe: Callable[[], T], timeout_s: float = 90.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        got = probe()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.25)


def _decision(url: str, event_id: str) -> tuple[str, str | None] | None:
    """(action, reason) of the worker's decision on ``event_id``, once audited."""
    for record in find_records(url, correlation_ids=[event_id]):
        if record.action in ("event.accepted", "event.rejected"):
            return record.action, record.reason
    return None


def _send(settings: Settings, topic: str, key: SigningKey, payload: dict[str, Any], typ: str,
          ) -> tuple[str, str | None]:
    send_all(settings, topic, [OutgoingMessage(None, key.sign(json.dumps(payload).encode(), typ))])
    decided = _wait(lambda: _decision(settings.database_url, payload["event_id"]))
    assert decided, f"no decision on {payload['event_id']}"
    return decided


def _dead_letter_reason(settings: Settings, value_contains: bytes) -> bytes | None:
    topic = DEAD_LETTER.name(settings)
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap,
                         "group.id": f"test-binding-{uuid.uuid4().hex}", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            if value_contains in (message.value() or b""):
                return dict(message.headers() or []).get("attest-reason")
        return None
    finally:
        consumer.close()


def test_a_ledger_key_cannot_file_a_tax_bureau_document_through_the_worker(
    stack_settings: Settings, worker: subprocess.Popen[bytes]
) -> None:
    url = stack_settings.database_url
    ensure_topics(stack_settings)
    key = generate_key("core-ledger", kid=f"core-ledger-bound-{uuid.uuid4().hex[:8]}")
    registry.add_key(url, key.kid, key.source, key.alg, key.public_jwk,
                     typs=[TRANSACTION_V1], department="core-ledger")
    assert registry.key_snapshot(url)[key.kid].typs == frozenset({TRANSACTION_V1})

    # The worker reloads the registry on a timer: until it knows the key, a transaction is
    # `unknown_key`; each probe is decided before the next is sent.
    def own_transaction_accepted() -> bool:
        payload = transaction_payloads(1, "core-ledger")[0]
        action, reason = _send(stack_settings, TRANSACTIONS.name(stack_settings), key, payload,
                               TRANSACTION_V1)
        assert reason in (None, "unknown_key"), reason
        return action == "event.accepted"

    assert _wait(own_transaction_accepted), "the worker never accepted the key's own transaction"

    document = next(d for d in document_payloads(2, now=datetime.now(UTC))
                    if d["agency"] == TAX_BUREAU)
    document = {**document, "source": "core-ledger"}
    action, reason = _send(stack_settings, DOCUMENTS.name(stack_settings), key, document, DOCUMENT_V1)
    assert (action, reason) == ("event.rejected", "scope_mismatch")
    assert worker.poll() is None

    raw_marker = key.sign(json.dumps(document).encode(), DOCUMENT_V1).split(b".")[1]
    assert _dead_letter_reason(stack_settings, raw_marker) == b"scope_mismatch"
    with engine_for(url).connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM events WHERE event_id = :e"),
                              {"e": document["event_id"]}).scalar_one()
    assert stored == 0
