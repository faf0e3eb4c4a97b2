"""The thin slice end to end: a real worker process, the real broker, the real Postgres."""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime

import pytest

from audit.queries import find_records
from audit.signing import unsigned_payload
from config.settings import Settings
from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from security.keyfiles import SigningKey, generate_key
from storage import keys as registry
from storage.events import count_events
from streams.admin import ensure_topics
from streams.producer import OutgoingMessage, send_all, sign_payload, tamper
from streams.topics import AUDIT, DEAD_LETTER, DOCUMENTS, TRANSACTIONS
from tests.support.topics import read_topic
from tests.support.waiting import wait_until
from tests.support.workers import wait_for_key_refresh

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def source_key(stack_settings: Settings) -> SigningKey:
    key = generate_key(f"ledger-{uuid.uuid4().hex[:6]}")
    registry.add_key(stack_settings.database_url, key.kid, key.source, key.alg, key.public_jwk)
    ensure_topics(stack_settings)
    return key


def _decisions(url: str, ids: list[str]) -> dict[str, list[str]]:
    by_id: dict[str, list[str]] = {}
    for record in find_records(url, correlation_ids=ids, limit=100_000):
        if record.action in ("event.accepted", "event.rejected"):
            by_id.setdefault(record.correlation_id or "", []).append(record.reason or "accepted")
    return by_id


def test_signed_events_are_stored_and_tampered_ones_dead_lettered(
    stack_settings: Settings, worker: subprocess.Popen[bytes], source_key: SigningKey
) -> None:
    url = stack_settings.database_url
    payloads = transaction_payloads(30, source_key.source)
    tokens = [sign_payload(source_key, p, TRANSACTION_V1) for p in payloads]
    tampered = {2: tamper(tokens[2]), 17: tamper(tokens[17])}
    messages = [OutgoingMessage(key=p["reference"].encode(), value=tampered.get(i, t))
                for i, (p, t) in enumerate(zip(payloads, tokens, strict=True))]
    replay = OutgoingMessage(key=b"again", value=tokens[5])
    garbage = OutgoingMessage(key=b"junk", value=b"\x00\xffnot a token")
    send_all(stack_settings, TRANSACTIONS.name(stack_settings), [*messages, replay, garbage])

    ids = [p["event_id"] for p in payloads]
    decisions = wait_until(lambda: _decisions(url, ids),
                           lambda d: sum(len(v) for v in d.values()) >= 31, timeout_s=90)
    assert worker.poll() is None, "the worker must keep running through bad input"
    assert decisions[ids[2]] == ["bad_signature"]
    assert decisions[ids[17]] == ["bad_signature"]
    assert sorted(decisions[ids[5]]) == ["accepted", "replayed"]
    accepted = [i for i in ids if "accepted" in decisions.get(i, [])]
    assert len(accepted) == 28
    assert count_events(url, ids) == 28

    # Every rejection is in the dead-letter topic with its original bytes and reason.
    letters = read_topic(stack_settings, DEAD_LETTER.name(stack_settings))
    by_value = {m.value(): dict(m.headers() or []) for m in letters}
    for raw, reason in ((tampered[2], b"bad_signature"), (tampered[17], b"bad_signature"),
                        (tokens[5], b"replayed"), (garbage.value, b"malformed")):
        assert raw in by_value, f"{reason!r} message missing from the dead-letter topic"
        headers = by_value[raw]
        assert headers["attest-reason"] == reason
        assert headers["attest-source-topic"] == TRANSACTIONS.name(stack_settings).encode()
        assert int(headers["attest-source-offset"]) >= 0

    # The audit topic carries the decisions the sink stored.
    # Signed by the worker (docs/audit.md): the record is the JWS payload.
    audit_values = [unsigned_payload(m.value())
                    for m in read_topic(stack_settings, AUDIT.name(stack_settings))]
    assert sum(ids[0].encode() in v and b"event.stored" in v for v in audit_values) == 1


def test_revoked_key_is_refused_without_restart(
    stack_settings: Settings, worker: subprocess.Popen[bytes], source_key: SigningKey
) -> None:
    url = stack_settings.database_url
    key = generate_key(source_key.source)
    registry.add_key(url, key.kid, key.source, key.alg, key.public_jwk)
    wait_for_key_refresh(stack_settings, key)  # workers refresh the registry on a timer
    before = transaction_payloads(1, key.source)[0]
    send_all(stack_settings, TRANSACTIONS.name(stack_settings),
             [OutgoingMessage(None, sign_payload(key, before, TRANSACTION_V1))])
    first = wait_until(lambda: _decisions(url, [before["event_id"]]), bool, timeout_s=60)
    assert first[before["event_id"]] == ["accepted"]

    registry.revoke_key(url, key.kid, "test revocation", datetime.now(UTC))
    wait_for_key_refresh(stack_settings, key, "revoked_key")
    after = transaction_payloads(1, key.source)[0]
    send_all(stack_settings, TRANSACTIONS.name(stack_settings),
             [OutgoingMessage(None, sign_payload(key, after, TRANSACTION_V1))])
    second = wait_until(lambda: _decisions(url, [after["event_id"]]), bool, timeout_s=60)
    assert second[after["event_id"]] == ["revoked_key"]
    assert count_events(url, [after["event_id"]]) == 0


@pytest.mark.slow  # needs the worker's MiniLM model (enrichment)
def test_accepted_transactions_are_categorized_and_metrics_served(
    stack_settings: Settings, worker: subprocess.Popen[bytes], source_key: SigningKey
) -> None:
    import urllib.request

    from tests.support.labels import opened_labels

    url = stack_settings.database_url
    payload = {**transaction_payloads(1, source_key.source)[0],
               "counterparty": "City Utilities", "memo": "electricity and water bill October"}
    send_all(stack_settings, TRANSACTIONS.name(stack_settings),
             [OutgoingMessage(None, sign_payload(source_key, payload, TRANSACTION_V1))])
    results = wait_until(lambda: opened_labels(stack_settings, payload["event_id"]), bool,
                         timeout_s=90)
    assert [(r.task, r.label) for r in results] == [("transaction_category", "utilities")]
    inferred = wait_until(
        lambda: find_records(url, correlation_ids=[payload["event_id"]], action="event.inferred"),
        bool, timeout_s=30)
    assert inferred and inferred[0].detail["model_version"] == results[0].model_version

    # The model pool lives in the enrichment stage's process, which serves its own metrics.
    port = worker.enrichment_web_port  # type: ignore[attr-defined]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body = response.read().decode()
    assert "attest_inference_batch_size" in body


@pytest.mark.slow  # needs the worker's MiniLM model (enrichment)
def test_documents_take_the_same_verification_path(
    stack_settings: Settings, worker: subprocess.Popen[bytes]
) -> None:
    from scenarios.government import SOCIAL_SECURITY, document_payloads
    from schemas.catalog import DOCUMENT_V1
    from storage.inferences import inferences_for

    url = stack_settings.database_url
    key = generate_key(SOCIAL_SECURITY)
    registry.add_key(url, key.kid, key.source, key.alg, key.public_jwk)
    wait_for_key_refresh(stack_settings, key)
    docs = [p for p in document_payloads(6) if p["source"] == SOCIAL_SECURITY]
    good, spoiled, wrong_schema = docs[0], docs[1], docs[2]
    wrong_token = sign_payload(key, transaction_payloads(1, key.source)[0], TRANSACTION_V1)
    send_all(stack_settings, DOCUMENTS.name(stack_settings), [
        OutgoingMessage(None, sign_payload(key, good, DOCUMENT_V1)),
        OutgoingMessage(None, tamper(sign_payload(key, spoiled, DOCUMENT_V1))),
        OutgoingMessage(None, wrong_token),
    ])
    decisions = wait_until(lambda: _decisions(url, [good["event_id"], spoiled["event_id"]]),
                           lambda d: len(d) == 2, timeout_s=90)
    assert decisions[good["event_id"]] == ["accepted"]
    assert decisions[spoiled["event_id"]] == ["bad_signature"]
    assert wrong_schema["event_id"] not in decisions
    labels = wait_until(lambda: inferences_for(url, good["event_id"]), bool, timeout_s=60)
    assert labels[0].task == "document_type"
    letters = {m.value(): dict(m.headers() or [])
               for m in read_topic(stack_settings, DEAD_LETTER.name(stack_settings))}
    assert letters[wrong_token]["attest-reason"] == b"schema_invalid"
