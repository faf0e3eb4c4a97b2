"""Nested JWT (JWE of the JWS) at intake: opened, pinned to one algorithm pair, reason codes.

Tokens are encrypted with jwcrypto; the product opens them with joserfc. No broker: the
whole decision is ``security.nested.verify_message`` with plain values.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from security.errors import Rejection, UnusableKey
from security.intake_keys import (
    HeldIntakeKeys,
    IntakeKeySet,
    ensure_intake_key,
    generate_intake_key,
    load_intake_keys,
    write_intake_key,
)
from security.keyfiles import generate_key
from security.nested import open_nested, seal_for_intake, verify_message
from security.reasons import RejectReason
from security.registry import KeyRecord
from security.verification import VerificationPolicy, verify_event
from streams.producer import sign_payload, tamper
from tests.support.nested import flip_part, jwcrypto_nested, with_header

SOURCE = "secret-ledger"
NOW = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
SIGNER = generate_key(SOURCE, "Ed25519", kid="secret-ledger-ed")
OPEN_SIGNER = generate_key("open-ledger", "Ed25519", kid="open-ledger-ed")
KEYS = {k.kid: KeyRecord(kid=k.kid, source=k.source, alg=k.alg, public_jwk=k.public_jwk,
                        encrypted_only=k is SIGNER)
        for k in (SIGNER, OPEN_SIGNER)}
INTAKE = generate_intake_key("attest-intake-test")
RING = IntakeKeySet({INTAKE.kid: INTAKE})
POLICY = VerificationPolicy(64 * 1024, timedelta(seconds=300), frozenset({TRANSACTION_V1}))


def signed(key=SIGNER) -> bytes:
    payload = transaction_payloads(1, key.source, seed=3, now=NOW)[0]
    return sign_payload(key, payload, TRANSACTION_V1)


def reason_of(raw: bytes, policy: VerificationPolicy = POLICY) -> RejectReason:
    with pytest.raises(Rejection) as caught:
        verify_message(raw, KEYS, RING, NOW, policy)
    return caught.value.reason


def test_a_jwcrypto_nested_token_verifies_like_the_plain_one() -> None:
    token = signed()
    event, encrypted = verify_message(jwcrypto_nested(token, INTAKE.public_jwk), KEYS, RING, NOW,
                                      POLICY)
    assert encrypted
    assert event == verify_event(token, KEYS, NOW, POLICY)


def test_the_product_seal_opens_with_jwcrypto_too() -> None:
    from jwcrypto import jwe, jwk

    token = signed()
    nested = seal_for_intake(token, INTAKE.public_jwk)
    private = jwk.JWK(**INTAKE._private_jwk)
    opened = jwe.JWE()
    opened.deserialize(nested.decode(), key=private)
    assert opened.payload == token
    assert open_nested(nested, RING, 64 * 1024) == token


def test_a_plain_token_of_a_key_that_requires_encryption_is_refused() -> None:
    assert reason_of(signed()) is RejectReason.ENCRYPTION_REQUIRED
    # A key without the flag may still sign plain tokens.
    event, encrypted = verify_message(signed(OPEN_SIGNER), KEYS, RING, NOW, POLICY)
    assert (event.source, encrypted) == ("open-ledger", False)


@pytest.mark.parametrize(("members", "reason"), [
    ({"alg": "ECDH-ES+A128KW"}, RejectReason.ALG_MISMATCH),
    ({"enc": "A128GCM"}, RejectReason.ALG_MISMATCH),
    ({"enc": "A256CBC-HS512"}, RejectReason.ALG_MISMATCH),
])
def test_other_algorithms_made_by_a_real_library_are_refused(members, reason) -> None:
    assert reason_of(jwcrypto_nested(signed(), INTAKE.public_jwk, **members)) is reason


def test_compressed_content_is_refused() -> None:
    nested = jwcrypto_nested(signed(), INTAKE.public_jwk, zip="DEF")
    assert reason_of(nested) is RejectReason.MALFORMED


@pytest.mark.parametrize("members", [
    {"jku": "https://attacker.example/jwks"},
    {"jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}},
    {"x5u": "https://attacker.example/cert"},
    {"crit": ["exp"], "exp": 1},
    {"typ": "JWT"},
    {"cty": "json"},
    {"kid": 7},
    {"epk": {"kty": "OKP", "crv": "X25519", "x": "AA"}},
    {"alg": "dir"},
    {"alg": "RSA-OAEP-256"},
])
def test_header_rules_name_their_reason(members) -> None:
    raw = with_header(jwcrypto_nested(signed(), INTAKE.public_jwk), **members)
    expected = RejectReason.ALG_MISMATCH if "alg" in members else RejectReason.MALFORMED
    assert reason_of(raw) is expected


def test_an_unknown_intake_kid_is_undecryptable() -> None:
    other = generate_intake_key("attest-intake-elsewhere")
    assert reason_of(jwcrypto_nested(signed(), other.public_jwk)) is RejectReason.UNDECRYPTABLE


def test_a_key_held_under_the_named_kid_but_not_the_right_one_is_undecryptable() -> None:
    impostor = generate_intake_key(INTAKE.kid)  # same kid, other key pair
    raw = jwcrypto_nested(signed(), impostor.public_jwk)
    assert reason_of(raw) is RejectReason.UNDECRYPTABLE


@pytest.mark.parametrize("part", [1, 2, 3, 4], ids=["wrapped-key", "iv", "ciphertext", "tag"])
def test_a_flipped_bit_anywhere_is_undecryptable(part: int) -> None:
    raw = flip_part(jwcrypto_nested(signed(), INTAKE.public_jwk), part)
    assert reason_of(raw) is RejectReason.UNDECRYPTABLE


def test_a_rewritten_header_breaks_the_tag() -> None:
    # apv is allowed, but the header is the AES-GCM associated data.
    raw = with_header(jwcrypto_nested(signed(), INTAKE.public_jwk), apv="eA")
    assert reason_of(raw) is RejectReason.UNDECRYPTABLE


def test_an_inner_token_that_fails_verification_keeps_its_own_reason() -> None:
    assert reason_of(jwcrypto_nested(tamper(signed()), INTAKE.public_jwk)) is RejectReason.BAD_SIGNATURE
    assert reason_of(jwcrypto_nested(b"not.a.jws.at.all", INTAKE.public_jwk)) is RejectReason.MALFORMED
    inner_nested = jwcrypto_nested(jwcrypto_nested(signed(), INTAKE.public_jwk), INTAKE.public_jwk)
    assert reason_of(inner_nested) is RejectReason.MALFORMED  # one layer only


def test_size_and_shape_are_checked_on_the_outer_bytes_first() -> None:
    small = VerificationPolicy(600, timedelta(seconds=300), frozenset({TRANSACTION_V1}))
    raw = jwcrypto_nested(signed(), INTAKE.public_jwk)
    assert reason_of(raw, small) is RejectReason.TOO_LARGE
    parts = raw.split(b".")
    assert reason_of(b".".join([parts[0], parts[1], b"AAAA", parts[3], parts[4]])) \
        is RejectReason.MALFORMED  # a 3-byte iv
    assert reason_of(b".".join([parts[0], parts[1], parts[2], b"", parts[4]])) \
        is RejectReason.MALFORMED  # no ciphertext
    assert reason_of(b".".join([b"e30", *parts[1:]])) is RejectReason.MALFORMED  # {} header


# -- intake key files -----------------------------------------------------------------------


def test_intake_keys_are_written_0600_and_public_halves_hold_no_secret(tmp_path: Path) -> None:
    folder = tmp_path / "intake-keys"
    path = write_intake_key(INTAKE, folder)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    held = load_intake_keys(folder)
    assert held.get(INTAKE.kid).public_jwk == INTAKE.public_jwk
    assert "d" not in INTAKE.public_jwk and INTAKE._private_jwk["d"] not in repr(INTAKE)
    assert INTAKE.public_jwk["alg"] == "ECDH-ES+A256KW" and INTAKE.public_jwk["use"] == "enc"
    with pytest.raises(FileExistsError):
        write_intake_key(INTAKE, folder)  # never overwritten


def test_a_group_readable_intake_key_is_refused(tmp_path: Path) -> None:
    path = write_intake_key(generate_intake_key(), tmp_path)
    os.chmod(path, 0o640)
    with pytest.raises(UnusableKey, match="0600"):
        load_intake_keys(tmp_path)


def test_rotation_decrypts_with_any_held_key_and_names_the_newest(tmp_path: Path) -> None:
    old, made = ensure_intake_key(tmp_path)
    assert made and ensure_intake_key(tmp_path) == (old, False)
    newer = generate_intake_key()
    write_intake_key(newer, tmp_path)
    ring = load_intake_keys(tmp_path)
    assert ring.newest.kid == newer.kid
    assert [k["kid"] for k in ring.public_jwks()["keys"]] == [newer.kid, old.kid]
    for key in (old, newer):
        token = signed()
        assert open_nested(seal_for_intake(token, key.public_jwk), ring, 64 * 1024) == token


def test_held_keys_are_reread_for_a_new_kid_at_most_so_often(tmp_path: Path) -> None:
    clock = [0.0]
    held = HeldIntakeKeys(tmp_path, min_reload_s=5, clock=lambda: clock[0])
    key = generate_intake_key()
    write_intake_key(key, tmp_path)
    clock[0] = 1.0
    assert held.get(key.kid) is None  # too soon after the last read
    clock[0] = 6.0
    assert held.get(key.kid) == key
