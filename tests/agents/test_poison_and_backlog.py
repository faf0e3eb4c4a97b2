"""Issue 14, items 1 and 2: a poison message never stops the worker; a backlog is not stale.

Before the fix, a validly signed event with U+0000 in a public field passed verification,
Postgres refused it in JSONB, and the worker exited without committing, forever; and any
event that waited in Kafka longer than the skew window was dead-lettered as `stale`.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agents.intake import IntakeProcessor
from audit.queries import find_records
from config.settings import Settings
from devstack.processes import terminate_tree
from protection.fields import writer_protector
from scenarios.finance import transaction_payloads
from scenarios.government import approval_payload, document_payloads
from schemas.catalog import APPROVAL_V1, DOCUMENT_V1, TRANSACTION_V1
from security.errors import Rejection
from security.keyfiles import SigningKey, generate_key
from security.reasons import RejectReason
from security.registry import KeyRecord
from security.verification import VerificationPolicy, forbidden_character_field, verify_event
from storage import keys as registry
from storage.events import StoredEvent, count_events
from streams.admin import ensure_topics
from streams.producer import OutgoingMessage, send_all, sign_payload
from streams.topics import APPROVALS, DEAD_LETTER, DOCUMENTS, TRANSACTIONS
from tests.support.topics import read_topic
from tests.support.waiting import wait_until
from tests.support.workers import start_worker, wait_for_key_refresh

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
ALL_TYPES = frozenset({TRANSACTION_V1, DOCUMENT_V1, APPROVAL_V1})


def _samples(source: str, now: datetime) -> list[tuple[str, dict[str, Any]]]:
    """One valid payload of every schema, every optional string field present."""
    transaction = transaction_payloads(1, source, seed=1, now=now)[0]
    document = {**document_payloads(2, seed=1, now=now)[0], "source": source}
    approval = approval_payload("REQ-1", "an approver", 2, reason="why not", seed=1, now=now,
                                source=source)
    samples = [(TRANSACTION_V1, transaction), (DOCUMENT_V1, document), (APPROVAL_V1, approval)]
    # Seeded generators draw the same first event_id; each sample must be its own event.
    return [(typ, {**payload, "event_id": str(uuid.uuid4())}) for typ, payload in samples]


def _nul_variants(source: str, now: datetime) -> list[tuple[str, str, dict[str, Any]]]:
    """(typ, field, payload) with U+0000 inside each string field of each schema in turn."""
    out = []
    for typ, payload in _samples(source, now):
        for field, value in payload.items():
            if isinstance(value, str) and field != "source":
                out.append((typ, field, {**payload, field: value[:3] + "\x00" + value[3:]}))
    return out


def _sign_escaped(key: SigningKey, payload: dict[str, Any], typ: str) -> bytes:
    """Signed with every non-ASCII character escaped, as a producer may: the only way a lone
    surrogate (``\\ud83d``) reaches the wire, since it has no UTF-8 encoding."""
    return key.sign(json.dumps(payload, separators=(",", ":")).encode("ascii"), typ)


def _key_snapshot(key: SigningKey) -> dict[str, KeyRecord]:
    return {key.kid: KeyRecord(key.kid, key.source, key.alg, key.public_jwk)}


# -- pure: verification refuses control characters -----------------------------------------


def test_forbidden_characters_are_found_by_path_never_by_value() -> None:
    assert forbidden_character_field({"a": "fine\ttab\nnewline\r"}) is None
    assert forbidden_character_field({"a": {"b": ["ok", "bad\x00"]}}) == "a.b[1]"
    assert forbidden_character_field({"a": "del\x7f"}) == "a"
    assert forbidden_character_field({"a": "lone \ud800"}) == "a"
    assert forbidden_character_field({"k\x01": 1}) == "(object) key"


@pytest.mark.parametrize("control", ["\x00", "\x01", "\x1b", "\x7f", "\ud83d"])
def test_every_string_field_of_every_schema_with_a_control_character_is_schema_invalid(
    control: str,
) -> None:
    key = generate_key("poison-ledger")
    policy = VerificationPolicy(65536, timedelta(minutes=5), ALL_TYPES)
    variants = _nul_variants(key.source, NOW)
    assert len(variants) >= 20  # every schema contributes its string fields
    for typ, field, payload in variants:
        payload = {**payload, field: payload[field].replace("\x00", control)}
        raw = _sign_escaped(key, payload, typ)
        with pytest.raises(Rejection) as caught:
            verify_event(raw, _key_snapshot(key), NOW, policy)
        assert caught.value.reason is RejectReason.SCHEMA_INVALID, (typ, field)
        assert control not in caught.value.detail
        assert field in caught.value.detail


# -- pure: freshness is judged by the broker's time -----------------------------------------


def test_a_backlog_older_than_the_window_is_fresh_by_the_time_it_reached_the_broker() -> None:
    key = generate_key("backlog-ledger")
    policy = VerificationPolicy(65536, timedelta(seconds=20), ALL_TYPES)
    issued = NOW - timedelta(hours=6)
    raw = sign_payload(key, transaction_payloads(1, key.source, now=issued)[0], TRANSACTION_V1)
    event = verify_event(raw, _key_snapshot(key), NOW, policy,
                         reached_broker_at=issued + timedelta(seconds=1))
    assert event.issued_at == issued
    # The same old token reaching the broker now is a replay of an old token: stale.
    with pytest.raises(Rejection) as caught:
        verify_event(raw, _key_snapshot(key), NOW, policy, reached_broker_at=NOW)
    assert caught.value.reason is RejectReason.STALE
    # A broker time in the future (a fast producer clock) counts as now, not later.
    with pytest.raises(Rejection):
        verify_event(raw, _key_snapshot(key), NOW, policy, reached_broker_at=NOW + timedelta(days=1))
    # Without a broker time the worker's clock is all there is.
    with pytest.raises(Rejection):
        verify_event(raw, _key_snapshot(key), NOW, policy)


def test_a_replay_without_the_window_accepts_an_old_token() -> None:
    key = generate_key("replay-ledger")
    policy = VerificationPolicy(65536, None, ALL_TYPES)
    raw = sign_payload(key, transaction_payloads(1, key.source, now=NOW - timedelta(days=30))[0],
                       TRANSACTION_V1)
    assert verify_event(raw, _key_snapshot(key), NOW, policy, reached_broker_at=NOW).event_id


# -- storage: a row the database refuses is dead-lettered alone -----------------------------


@pytest.mark.integration
async def test_a_row_the_database_refuses_is_unstorable_and_the_rest_is_stored(
    stack_settings: Settings,
) -> None:
    key = generate_key(f"unstorable-{uuid.uuid4().hex[:6]}")
    topic = TRANSACTIONS.name(stack_settings)
    intake = IntakeProcessor(
        stack_settings, actor="test", accepted_types={topic: frozenset({TRANSACTION_V1})},
        protector=writer_protector(stack_settings.state_dir, {}),
    )
    now = datetime.now(UTC)
    payloads = transaction_payloads(5, key.source, now=now)
    # Verification refuses this now; storage must still survive a value it cannot hold (the
    # next unknown unknown), so the row goes straight to storage here. `source` is public,
    # so it lands in events.payload (JSONB), which refuses U+0000.
    # Row 4's kid (a text column) holds U+0000 too, which the driver refuses before sending.
    poisoned = {2: {**payloads[2], "source": "bad\x00source"}, 4: {**payloads[4], "kid": "k\x00"}}
    base = uuid.uuid4().int % 10**9
    rows = [
        StoredEvent(
            event_id=p["event_id"], typ=TRANSACTION_V1,
            source=key.source, kid=poisoned.get(i, {}).get("kid", key.kid), topic=topic,
            partition=0, offset=base + i, issued_at=now, received_at=now, verified_at=now,
            payload={k: v for k, v in poisoned.get(i, p).items() if k != "kid"},
        )
        for i, p in enumerate(payloads)
    ]
    outcome, unstorable = await intake._store_isolating(rows)
    assert set(unstorable) == {payloads[2]["event_id"], payloads[4]["event_id"]}
    assert outcome.inserted == {payloads[i]["event_id"] for i in (0, 1, 3)}
    assert all("\x00" not in detail for detail in unstorable.values())
    assert count_events(stack_settings.database_url, [p["event_id"] for p in payloads]) == 3


# -- through a real worker ------------------------------------------------------------------


def _register(settings: Settings, key: SigningKey) -> None:
    registry.add_key(settings.database_url, key.kid, key.source, key.alg, key.public_jwk)


@pytest.mark.integration
def test_a_nul_in_every_string_field_never_stops_the_worker(
    stack_settings: Settings, worker: subprocess.Popen[bytes]
) -> None:
    url = stack_settings.database_url
    key = generate_key(f"nul-{uuid.uuid4().hex[:6]}")
    _register(stack_settings, key)
    ensure_topics(stack_settings)
    now = datetime.now(UTC)
    wait_for_key_refresh(stack_settings, key)  # the worker's registry refresh
    topic_of = {TRANSACTION_V1: TRANSACTIONS, DOCUMENT_V1: DOCUMENTS, APPROVAL_V1: APPROVALS}
    poison = [(typ, sign_payload(key, payload, typ)) for typ, _, payload in _nul_variants(key.source, now)]
    samples = _samples(key.source, now)
    good = [(typ, sign_payload(key, payload, typ)) for typ, payload in samples]
    # The good events after the poison: they are only stored if the worker went on.
    for typ, raw in poison + good:
        send_all(stack_settings, topic_of[typ].name(stack_settings),
                 [OutgoingMessage(key=None, value=raw)])
    good_ids = [p["event_id"] for _, p in samples]
    stored = wait_until(lambda: count_events(url, good_ids), lambda n: n == len(good_ids), 90)
    assert worker.poll() is None, "the worker must survive every poison message"
    assert stored == len(good_ids)
    letters = [m for m in read_topic(stack_settings, DEAD_LETTER.name(stack_settings))
               if m.value() in {raw for _, raw in poison}]
    assert len({m.value() for m in letters}) == len(poison)
    assert {dict(m.headers())["attest-reason"] for m in letters} == {b"schema_invalid"}


@pytest.mark.integration
def test_an_outage_far_longer_than_the_window_loses_nothing(stack_settings: Settings) -> None:
    """Events produced while no worker runs, for 3x the window, are all stored after it."""
    url = stack_settings.database_url
    window_s = 2
    # Topics of its own, so no other worker of the session drains them first.
    tag = uuid.uuid4().hex[:6]
    settings = stack_settings.model_copy(update={
        "topic_prefix": f"o{tag}.", "app_id": f"outage-{tag}", "max_clock_skew_s": window_s,
    })
    key = generate_key(f"outage-{tag}")
    _register(settings, key)
    ensure_topics(settings)
    payloads = transaction_payloads(30, key.source)
    send_all(settings, TRANSACTIONS.name(settings),
             [OutgoingMessage(key=None, value=sign_payload(key, p, TRANSACTION_V1)) for p in payloads])
    sent_at = time.monotonic()
    # The outage: nothing consumes for three windows.
    wait_until(lambda: time.monotonic() - sent_at, lambda waited: waited > 3 * window_s, 30)

    log_path = Path(stack_settings.state_dir) / f"outage-worker-{uuid.uuid4().hex[:6]}.log"
    started = datetime.now(UTC)
    proc = start_worker(settings, log_path)
    try:
        ids = [p["event_id"] for p in payloads]
        stored = wait_until(lambda: count_events(url, ids), lambda n: n == len(ids), 120)
        assert stored == len(ids), log_path.read_text()[-2000:]
        stale = [r for r in find_records(url, action="event.rejected", since=started, limit=10_000)
                 if r.reason == "stale" and r.correlation_id in set(ids)]
        assert not stale
    finally:
        terminate_tree(proc.pid, timeout_s=15)


@pytest.mark.parametrize("stamp", ["9999-12-31T23:59:00-01:00", "0001-01-01T00:00:00+01:00"])
def test_an_issued_at_that_cannot_be_read_back_is_schema_invalid_even_in_a_replay(stamp: str) -> None:
    """Review finding L2: stored, such a time broke every reader of the row."""
    key = generate_key("edge-ledger")
    raw = sign_payload(key, {**transaction_payloads(1, key.source)[0], "issued_at": stamp},
                       TRANSACTION_V1)
    with pytest.raises(Rejection) as caught:
        verify_event(raw, _key_snapshot(key), NOW, VerificationPolicy(65536, None, ALL_TYPES))
    assert caught.value.reason is RejectReason.SCHEMA_INVALID
