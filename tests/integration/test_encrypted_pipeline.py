"""Issue 14, item 3 (part A) through a real worker: nested tokens (JWE of the JWS) at intake.

A jwcrypto-encrypted token is stored like a plain one and classified by enrichment; every
broken one is dead-lettered with its reason and nothing is stored; a dead letter of an
encrypted message is the encrypted bytes, untouched; a plain token signed by a key that
requires encryption (the registry's flag) is refused as ``encryption_required``, by the
worker and again by the operator's ``attest dlq retry``, whose environment has no say.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from audit.queries import find_records
from config.settings import Settings
from devstack.processes import terminate_tree
from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from security.intake_keys import ensure_intake_key, generate_intake_key, write_intake_key
from security.keyfiles import SigningKey, generate_key
from storage import keys as registry
from storage.db import engine_for
from streams.admin import ensure_topics
from streams.producer import OutgoingMessage, send_all, sign_payload, tamper
from streams.topics import DEAD_LETTER, TRANSACTIONS
from tests.support.nested import flip_part, jwcrypto_nested
from tests.support.topics import read_topic
from tests.support.waiting import wait_for, wait_until
from tests.support.workers import (
    decision,
    settings_env,
    start_worker,
    wait_for_key_refresh,
    wait_until_ready,
)

pytestmark = pytest.mark.integration

SEALED = f"sealed-ledger-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def worker(stack_settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """A worker holding an intake key (``SEALED``'s key requires encryption in the registry)."""
    ensure_intake_key(stack_settings.intake_keys_dir)
    proc = start_worker(stack_settings, extra_env={"ATTEST_RECON_MODEL_SIMILARITY": "false"})
    try:
        wait_until_ready(proc)
        yield proc
    finally:
        terminate_tree(proc.pid, timeout_s=15)
        proc.wait(timeout=5)


def _registered(settings: Settings, source: str, *, encrypted_only: bool = False) -> SigningKey:
    key = generate_key(source, kid=f"{source}-{uuid.uuid4().hex[:8]}")
    registry.add_key(settings.database_url, key.kid, key.source, key.alg, key.public_jwk,
                     department=source, encrypted_only=encrypted_only)
    return key


def _stored(url: str, event_ids: list[str]) -> set[str]:
    with engine_for(url).connect() as conn:
        rows = conn.execute(text("SELECT event_id::text FROM events WHERE event_id::text = ANY(:ids)"),
                            {"ids": event_ids}).scalars()
        return set(rows)


def test_nested_tokens_through_the_worker(stack_settings: Settings,
                                          worker: subprocess.Popen[bytes]) -> None:
    settings, url = stack_settings, stack_settings.database_url
    ensure_topics(settings)
    intake, _ = ensure_intake_key(settings.intake_keys_dir)
    sealed = _registered(settings, SEALED, encrypted_only=True)
    plain_source = _registered(settings, f"open-{SEALED}")
    # A plain token of the sealed key is refused once the worker knows the key...
    wait_for_key_refresh(settings, sealed, expect="encryption_required")
    wait_for_key_refresh(settings, plain_source)  # ...while another source may stay plain.

    payloads = transaction_payloads(7, SEALED, now=datetime.now(UTC))
    tokens = [sign_payload(sealed, p, TRANSACTION_V1) for p in payloads]
    good = jwcrypto_nested(tokens[0], intake.public_jwk)
    stranger = generate_intake_key("attest-intake-not-held")
    bad = {
        "alg_mismatch": jwcrypto_nested(tokens[1], intake.public_jwk, alg="ECDH-ES+A128KW"),
        "malformed": jwcrypto_nested(tokens[2], intake.public_jwk, zip="DEF"),
        "undecryptable": jwcrypto_nested(tokens[3], stranger.public_jwk),
        "bad_signature": jwcrypto_nested(tamper(tokens[4]), intake.public_jwk),
        "encryption_required": tokens[5],
    }
    tampered_ciphertext = flip_part(jwcrypto_nested(tokens[6], intake.public_jwk), 3)
    sent = [good, *bad.values(), tampered_ciphertext]
    send_all(settings, TRANSACTIONS.name(settings), [OutgoingMessage(None, raw) for raw in sent])

    # The good one: stored, audited as accepted (and encrypted), then classified from the
    # opened token by the enrichment stage.
    assert wait_for(lambda: decision(url, payloads[0]["event_id"]), 90, "the nested event") == "accepted"
    accepted = find_records(url, action="event.accepted", correlation_ids=[payloads[0]["event_id"]])
    assert accepted[0].detail["encrypted"] is True
    inferred = wait_until(
        lambda: find_records(url, action="event.inferred", correlation_ids=[payloads[0]["event_id"]]),
        bool, timeout_s=240)
    assert inferred[0].outcome == "ok"

    # Every other one: dead-lettered with its reason, as the very bytes that were sent.
    expected = {**{raw: reason for reason, raw in bad.items()}, tampered_ciphertext: "undecryptable"}
    letters = wait_until(
        lambda: {m.value(): dict(m.headers() or []) for m in
                 read_topic(settings, DEAD_LETTER.name(settings)) if m.value() in expected},
        lambda found: len(found) == len(expected), timeout_s=90)
    got = {raw: headers["attest-reason"].decode() for raw, headers in letters.items()}
    assert got == expected
    for raw, reason in expected.items():
        if reason != "encryption_required":  # the one plain token
            assert raw.count(b".") == 4 and payloads[0]["account"].encode() not in raw
    # The inner token of a rejected nested message still names its event (correlation).
    assert decision(url, payloads[4]["event_id"]) == "bad_signature"
    assert _stored(url, [p["event_id"] for p in payloads]) == {payloads[0]["event_id"]}

    # The operator's retry of that letter, from an environment that says nothing about
    # encryption, refuses it again: the flag is the registry's (review finding).
    retried = subprocess.run(
        [sys.executable, "-m", "cli.main", "dlq", "retry", "--reason", "encryption_required",
         "--source", SEALED, "--why", "plain token of a key that requires encryption"],
        env=settings_env(settings), capture_output=True, text=True, timeout=180, check=False)
    assert not settings_env(settings).get("ATTEST_ENCRYPTED_SOURCES")
    assert retried.returncode == 0, retried.stderr
    assert "rejected:encryption_required" in retried.stdout, retried.stdout  # retried...
    assert _stored(url, [payloads[5]["event_id"]]) == set()  # ...and refused again


def test_a_new_intake_key_opens_old_letters_on_retry_and_new_tokens_without_restart(
        stack_settings: Settings, worker: subprocess.Popen[bytes]) -> None:
    settings, url = stack_settings, stack_settings.database_url
    ensure_topics(settings)
    signer = _registered(settings, f"rotating-{SEALED}")
    wait_for_key_refresh(settings, signer)
    rotated = generate_intake_key(f"attest-intake-rotated-{uuid.uuid4().hex[:6]}")
    early, late = transaction_payloads(2, signer.source, now=datetime.now(UTC))
    early_raw = jwcrypto_nested(sign_payload(signer, early, TRANSACTION_V1), rotated.public_jwk)
    send_all(settings, TRANSACTIONS.name(settings), [OutgoingMessage(None, early_raw)])
    # Unopenable, so no event id to correlate: its dead letter is what shows the decision.
    letter = wait_until(lambda: [m for m in read_topic(settings, DEAD_LETTER.name(settings))
                                 if m.value() == early_raw], bool, timeout_s=90)
    assert dict(letter[0].headers())["attest-reason"] == b"undecryptable"

    write_intake_key(rotated, settings.intake_keys_dir)  # the operator rotates
    late_raw = jwcrypto_nested(sign_payload(signer, late, TRANSACTION_V1), rotated.public_jwk)
    send_all(settings, TRANSACTIONS.name(settings), [OutgoingMessage(None, late_raw)])
    assert wait_for(lambda: decision(url, late["event_id"]), 90, "the late token") == "accepted"

    retried = subprocess.run(
        [sys.executable, "-m", "cli.main", "dlq", "retry", "--reason", "undecryptable",
         "--why", "intake key installed late"],
        env=settings_env(settings), capture_output=True, text=True, timeout=180, check=False)
    assert retried.returncode == 0, retried.stderr
    assert _stored(url, [early["event_id"], late["event_id"]]) == {early["event_id"], late["event_id"]}
