"""A key's ``encrypted_only`` flag (the registry's, migration 0015): its plain tokens are
refused as ``encryption_required``, whatever the verifying process's settings say.

Pure: ``verify_message`` with plain values, no broker, no database.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from config.settings import Settings
from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from security.errors import Rejection
from security.intake_keys import IntakeKeySet, generate_intake_key
from security.keyfiles import generate_key
from security.nested import seal_for_intake, verify_message
from security.reasons import RejectReason
from security.registry import KeyRecord
from security.verification import VerificationPolicy
from streams.producer import sign_payload, tamper

NOW = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
SIGNER = generate_key("sealed-ledger", "Ed25519", kid="sealed-ledger-ed")
FLAGGED = KeyRecord(kid=SIGNER.kid, source=SIGNER.source, alg=SIGNER.alg,
                    public_jwk=SIGNER.public_jwk, encrypted_only=True)
INTAKE = generate_intake_key("attest-intake-flag-test")
RING = IntakeKeySet({INTAKE.kid: INTAKE})
POLICY = VerificationPolicy(64 * 1024, timedelta(seconds=300), frozenset({TRANSACTION_V1}))


def token() -> bytes:
    return sign_payload(SIGNER, transaction_payloads(1, SIGNER.source, seed=5, now=NOW)[0],
                        TRANSACTION_V1)


def test_a_plain_token_of_a_flagged_key_is_refused_and_its_nested_form_accepted() -> None:
    with pytest.raises(Rejection) as caught:
        verify_message(token(), {FLAGGED.kid: FLAGGED}, RING, NOW, POLICY)
    assert caught.value.reason is RejectReason.ENCRYPTION_REQUIRED
    assert FLAGGED.kid in caught.value.detail
    event, encrypted = verify_message(seal_for_intake(token(), INTAKE.public_jwk),
                                      {FLAGGED.kid: FLAGGED}, RING, NOW, POLICY)
    assert encrypted and event.kid == FLAGGED.kid
    unflagged = dataclasses.replace(FLAGGED, encrypted_only=False)
    assert verify_message(token(), {FLAGGED.kid: unflagged}, RING, NOW, POLICY)[1] is False


def test_the_flag_is_judged_only_after_the_signature_holds() -> None:
    """A forger who types the kid gets ``bad_signature``: the reason speaks for the real key."""
    with pytest.raises(Rejection) as caught:
        verify_message(tamper(token()), {FLAGGED.kid: FLAGGED}, RING, NOW, POLICY)
    assert caught.value.reason is RejectReason.BAD_SIGNATURE


def test_no_caller_policy_can_waive_it() -> None:
    """The old rule was a field of the caller's policy, filled from its own environment."""
    assert "encryption_required" not in {f.name for f in dataclasses.fields(VerificationPolicy)}


def test_the_removed_environment_variable_is_refused_not_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Silently ignored, a deployment that set it would lose the rule without a word."""
    monkeypatch.setenv("ATTEST_ENCRYPTED_SOURCES", "core-ledger")
    with pytest.raises(ValidationError, match="attest keys require-encryption"):
        Settings()
    monkeypatch.setenv("ATTEST_ENCRYPTED_SOURCES", "")
    assert Settings().encrypted_sources == ""
