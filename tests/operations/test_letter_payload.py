"""Issue 14, item 3: a dead letter's payload is shown only as an audited act.

A JWS signs but does not hide: ``attest dlq show`` used to print every dead letter's decoded
payload (accounts, amounts) to whoever ran it, with no record. Now it shows what the letter
is, and the payload only with ``--payload --why``, after a ``dlq.payload_shown`` record.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer

from config.settings import Settings
from scenarios.finance import transaction_payloads
from schemas.audit import AuditAction, records_in
from schemas.catalog import TRANSACTION_V1
from security.keyfiles import generate_key
from streams.admin import ensure_topics
from streams.producer import producer_config, sign_payload
from streams.topics import AUDIT, DEAD_LETTER, TRANSACTIONS
from tests.support.topics import read_topic
from tests.support.workers import settings_env

pytestmark = pytest.mark.integration


def _attest(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_payload_is_hidden_unless_asked_for_with_a_reason_and_then_audited(
    stack_settings: Settings,
) -> None:
    own = stack_settings.model_copy(update={"topic_prefix": f"show{uuid.uuid4().hex[:6]}."})
    ensure_topics(own)
    key = generate_key("show-ledger")
    (payload,) = transaction_payloads(1, key.source)
    landed: list[tuple[int, int]] = []
    producer = Producer(producer_config(own))
    producer.produce(DEAD_LETTER.name(own), sign_payload(key, payload, TRANSACTION_V1), key=b"k",
                     headers=[("attest-reason", b"unknown_key"), ("attest-detail", b"no such key"),
                              ("attest-source-topic", TRANSACTIONS.name(own).encode()),
                              ("attest-source-partition", b"0"), ("attest-source-offset", b"7"),
                              ("attest-rejected-at", datetime.now(UTC).isoformat().encode())],
                     on_delivery=lambda err, msg: landed.append((msg.partition(), msg.offset())))
    producer.flush(30)
    position = "{}:{}".format(*landed[0])

    plain = _attest(own, "dlq", "show", position)
    assert plain.returncode == 0, plain.stderr
    assert "payload: hidden" in plain.stdout and "sha256" in plain.stdout
    assert payload["account"] not in plain.stdout and payload["event_id"] not in plain.stdout

    no_reason = _attest(own, "dlq", "show", position, "--payload")
    assert no_reason.returncode != 0 and "--why" in no_reason.stderr
    assert payload["account"] not in no_reason.stdout

    shown = _attest(own, "dlq", "show", position, "--payload", "--why", "INC-7: what did it say")
    assert shown.returncode == 0, shown.stderr
    assert payload["account"] in shown.stdout
    records = [r for m in read_topic(own, AUDIT.name(own)) for r in records_in(m.value())]
    (record,) = [r for r in records if r.action == AuditAction.DLQ_PAYLOAD_SHOWN]
    assert record.detail["why"] == "INC-7: what did it say" and record.actor.startswith("operator:")
    assert record.correlation_id.endswith(f"/{landed[0][0]}@{landed[0][1]}")
