"""verify_event: the whole pipeline with a key snapshot, a fixed clock and every reason code."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from scenarios.finance import transaction_payloads
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from security.errors import Rejection
from security.keyfiles import SigningKey, generate_key
from security.reasons import RejectReason
from security.registry import KeyRecord
from security.signatures import b64url_decode, b64url_encode
from security.verification import VerificationPolicy, VerifiedEvent, verify_event
from tests.support import jws

SOURCE = "core-ledger"
NOW = datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC)
POLICY = VerificationPolicy(
    max_event_bytes=64 * 1024,
    max_clock_skew=timedelta(seconds=300),
    accepted_types=frozenset({TRANSACTION_V1}),
)

ED_KEY = generate_key(SOURCE, "Ed25519", kid="core-ledger-ed25519")
EC_KEY = generate_key(SOURCE, "ES256", kid="core-ledger-es256")
OTHER_ED_KEY = generate_key(SOURCE, "Ed25519", kid="core-ledger-ed25519")  # same kid, other key
SWITCH_KEY = generate_key("payment-switch", "Ed25519", kid="payment-switch-ed25519")
KEYS = [ED_KEY, EC_KEY]
KEY_IDS = ["Ed25519", "ES256"]


def payload(**overrides: Any) -> dict[str, Any]:
    event = transaction_payloads(1, SOURCE, seed=42, now=NOW)[0]
    event.update(overrides)
    return event


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def record(key: SigningKey, **window: Any) -> KeyRecord:
    return KeyRecord(kid=key.kid, source=key.source, alg=key.alg, public_jwk=key.public_jwk,
                     **window)


def snapshot(*records: KeyRecord) -> dict[str, KeyRecord]:
    return {r.kid: r for r in records}


def signed(key: SigningKey, body: dict[str, Any] | bytes | None = None,
           typ: str = TRANSACTION_V1) -> bytes:
    """A token made the production way (joserfc through ``SigningKey.sign``)."""
    data = body if isinstance(body, bytes) else encode(payload() if body is None else body)
    return key.sign(data, typ)


def crafted(key: SigningKey, header: dict[str, Any] | str, body: bytes | None = None,
            signature: bytes | None = None) -> bytes:
    """A hand-built compact JWS; signed over its signing input by ``key`` unless given."""
    return jws.token(header, encode(payload()) if body is None else body, signature, key=key)


def header_for(key: SigningKey, **overrides: Any) -> dict[str, Any]:
    return {"alg": key.alg, "kid": key.kid, "typ": TRANSACTION_V1, **overrides}


def rejection(raw: bytes, keys: dict[str, KeyRecord], now: datetime = NOW,
              policy: VerificationPolicy = POLICY) -> Rejection:
    with pytest.raises(Rejection) as info:
        verify_event(raw, keys, now, policy)
    return info.value


def reason(raw: bytes, keys: dict[str, KeyRecord], now: datetime = NOW,
           policy: VerificationPolicy = POLICY) -> RejectReason:
    return rejection(raw, keys, now, policy).reason


def replace_payload(raw: bytes, body: bytes) -> bytes:
    header, _, signature = raw.split(b".")
    return b".".join((header, b64url_encode(body).encode("ascii"), signature))


# --- accepted ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
def test_valid_event_is_accepted_with_its_fields(key):
    body = payload()
    event = verify_event(signed(key, body), snapshot(record(key)), NOW, POLICY)
    assert isinstance(event, VerifiedEvent)
    assert event.event_id == body["event_id"]
    assert event.source == SOURCE
    assert event.kid == key.kid
    assert event.alg == key.alg
    assert event.typ == TRANSACTION_V1
    assert event.issued_at == NOW
    assert event.issued_at.utcoffset() == timedelta(0)
    assert event.payload == body


def test_valid_event_among_many_keys_is_accepted():
    keys = snapshot(record(ED_KEY), record(EC_KEY), record(SWITCH_KEY))
    assert verify_event(signed(EC_KEY), keys, NOW, POLICY).kid == EC_KEY.kid


def test_eddsa_header_is_accepted_for_an_ed25519_key():
    raw = crafted(ED_KEY, header_for(ED_KEY, alg="EdDSA"))
    assert verify_event(raw, snapshot(record(ED_KEY)), NOW, POLICY).alg == "Ed25519"


@pytest.mark.parametrize(
    "issued_at",
    ["2025-03-14T12:00:00Z", "2025-03-14T13:00:00+01:00", "2025-03-14T07:00:00-05:00",
     "2025-03-14T12:00:00.123456789Z", "2025-03-14T12:00:00.1Z"],
)
def test_issued_at_offsets_are_understood(issued_at):
    event = verify_event(signed(ED_KEY, payload(issued_at=issued_at)),
                         snapshot(record(ED_KEY)), NOW, POLICY)
    assert abs(event.issued_at - NOW) < timedelta(seconds=1)


def test_key_inside_its_window_is_accepted():
    key = record(ED_KEY, not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=1),
                 revoked_at=NOW + timedelta(seconds=1))
    assert verify_event(signed(ED_KEY), snapshot(key), NOW, POLICY).kid == ED_KEY.kid


def test_other_accepted_type_on_the_topic():
    policy = VerificationPolicy(POLICY.max_event_bytes, POLICY.max_clock_skew,
                                frozenset({TRANSACTION_V1, DOCUMENT_V1}))
    assert verify_event(signed(ED_KEY), snapshot(record(ED_KEY)), NOW, policy).typ == TRANSACTION_V1


# --- bad_signature ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
@pytest.mark.parametrize(
    "change",
    [{"amount": "999999.99"}, {"account": "DE00000000000000000000"}, {"direction": "debit"},
     {"direction": "credit"}, {"memo": "invoice 1"}],
    ids=["amount", "account", "direction-debit", "direction-credit", "memo"],
)
def test_tampered_payload_is_bad_signature(key, change):
    original = payload()
    tampered = {**original, **change}
    if tampered == original:
        tampered["reference"] = original["reference"] + "0"
    raw = replace_payload(signed(key, original), encode(tampered))
    assert reason(raw, snapshot(record(key))) is RejectReason.BAD_SIGNATURE


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
def test_tampered_header_is_bad_signature(key):
    raw = signed(key)
    _, body, signature = raw.split(b".")
    header = b64url_encode(json.dumps(header_for(key, typ=TRANSACTION_V1)).encode()).encode()
    assert header != raw.split(b".")[0]  # a different (but equivalent) header encoding
    assert reason(b".".join((header, body, signature)), snapshot(record(key))) is (
        RejectReason.BAD_SIGNATURE
    )


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
@pytest.mark.parametrize("index", [0, 31, 32, 63])
def test_flipped_signature_byte_is_bad_signature(key, index):
    header, body, signature = signed(key).split(b".")
    sig = bytearray(b64url_decode(signature))
    sig[index] ^= 0x01
    raw = b".".join((header, body, b64url_encode(bytes(sig)).encode()))
    assert reason(raw, snapshot(record(key))) is RejectReason.BAD_SIGNATURE


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
@pytest.mark.parametrize(
    "signature", [b"", b"\x00" * 64, b"\x00" * 63, b"\x01" * 65], ids=["empty", "zeros", "63", "65"]
)
def test_junk_signature_is_bad_signature(key, signature):
    header, body, _ = signed(key).split(b".")
    raw = b".".join((header, body, b64url_encode(signature).encode()))
    assert reason(raw, snapshot(record(key))) is RejectReason.BAD_SIGNATURE


def test_der_es256_signature_is_bad_signature():
    header, body, _ = signed(EC_KEY).split(b".")
    d = int.from_bytes(b64url_decode(EC_KEY._private_jwk["d"]), "big")
    private = ec.derive_private_key(d, ec.SECP256R1())
    der = private.sign(header + b"." + body, ec.ECDSA(hashes.SHA256()))
    raw = b".".join((header, body, b64url_encode(der).encode()))
    assert reason(raw, snapshot(record(EC_KEY))) is RejectReason.BAD_SIGNATURE


def test_signature_by_another_key_under_the_same_kid_is_bad_signature():
    assert OTHER_ED_KEY.kid == ED_KEY.kid
    assert reason(signed(OTHER_ED_KEY), snapshot(record(ED_KEY))) is RejectReason.BAD_SIGNATURE


def test_bad_signature_is_decided_before_the_payload_is_parsed():
    raw = replace_payload(signed(ED_KEY), b"not json at all")
    assert reason(raw, snapshot(record(ED_KEY))) is RejectReason.BAD_SIGNATURE


# --- unknown_key -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
def test_unregistered_kid_is_unknown_key(key):
    assert reason(signed(key), snapshot(record(SWITCH_KEY))) is RejectReason.UNKNOWN_KEY
    assert reason(signed(key), {}) is RejectReason.UNKNOWN_KEY


@pytest.mark.parametrize("kid", ["core-ledger-ed25519 ", "CORE-LEDGER-ED25519", "core-ledger"])
def test_near_miss_kid_is_unknown_key(kid):
    raw = crafted(ED_KEY, header_for(ED_KEY, kid=kid))
    assert reason(raw, snapshot(record(ED_KEY))) is RejectReason.UNKNOWN_KEY


def test_registered_key_that_cannot_be_used_is_unknown_key():
    short_x = b64url_encode(b"\x01" * 31)
    broken = KeyRecord(kid=ED_KEY.kid, source=SOURCE, alg="Ed25519",
                       public_jwk={"kty": "OKP", "crv": "Ed25519", "x": short_x})
    assert reason(signed(ED_KEY), snapshot(broken)) is RejectReason.UNKNOWN_KEY


# --- revoked_key / expired_key ---------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
@pytest.mark.parametrize(
    "revoked_at", [NOW - timedelta(hours=1), NOW - timedelta(seconds=1), NOW],
    ids=["1h-ago", "1s-ago", "now"],
)
def test_revoked_key_is_revoked_key(key, revoked_at):
    keys = snapshot(record(key, revoked_at=revoked_at, revoked_reason="compromised"))
    assert reason(signed(key), keys) is RejectReason.REVOKED_KEY


def test_revoked_wins_over_expired():
    keys = snapshot(record(ED_KEY, revoked_at=NOW - timedelta(days=1),
                           not_after=NOW - timedelta(days=2)))
    assert reason(signed(ED_KEY), keys) is RejectReason.REVOKED_KEY


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
@pytest.mark.parametrize(
    "window",
    [
        {"not_after": NOW - timedelta(days=1)},
        {"not_after": NOW - timedelta(seconds=1)},
        {"not_after": NOW},
        {"not_before": NOW + timedelta(seconds=1)},
        {"not_before": NOW + timedelta(days=30)},
        {"not_before": NOW - timedelta(days=10), "not_after": NOW - timedelta(days=1)},
    ],
    ids=["expired-1d", "expired-1s", "expired-now", "not-yet-1s", "not-yet-30d", "past-window"],
)
def test_key_outside_its_window_is_expired_key(key, window):
    assert reason(signed(key), snapshot(record(key, **window))) is RejectReason.EXPIRED_KEY


def test_key_state_is_checked_before_the_signature():
    # A revoked key's forged token is still reported as revoked, not as a bad signature.
    raw = replace_payload(signed(ED_KEY), encode(payload(amount="1.00")))
    keys = snapshot(record(ED_KEY, revoked_at=NOW - timedelta(hours=1)))
    assert reason(raw, keys) is RejectReason.REVOKED_KEY


# --- alg_mismatch ----------------------------------------------------------------------------


def test_es256_header_for_an_ed25519_key_is_alg_mismatch():
    # Signed with the EC key but naming the Ed25519 key's kid: the registry binds kid to alg.
    raw = crafted(EC_KEY, header_for(ED_KEY, alg="ES256"))
    assert reason(raw, snapshot(record(ED_KEY))) is RejectReason.ALG_MISMATCH


def test_es256_header_signed_by_the_ed25519_key_is_alg_mismatch():
    raw = crafted(ED_KEY, header_for(ED_KEY, alg="ES256"))
    assert reason(raw, snapshot(record(ED_KEY))) is RejectReason.ALG_MISMATCH


@pytest.mark.parametrize("alg", ["Ed25519", "EdDSA"])
def test_ed25519_header_for_an_es256_key_is_alg_mismatch(alg):
    raw = crafted(ED_KEY, header_for(EC_KEY, alg=alg))
    assert reason(raw, snapshot(record(EC_KEY))) is RejectReason.ALG_MISMATCH


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
@pytest.mark.parametrize("signature", [b"", b"\x00" * 64], ids=["empty", "zeros"])
def test_alg_none_is_alg_mismatch(key, signature):
    raw = crafted(key, header_for(key, alg="none"), signature=signature)
    assert reason(raw, snapshot(record(key))) is RejectReason.ALG_MISMATCH


def test_alg_none_with_unknown_kid_is_alg_mismatch():
    raw = crafted(ED_KEY, header_for(ED_KEY, alg="none", kid="nobody"), signature=b"")
    assert reason(raw, {}) is RejectReason.ALG_MISMATCH


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
def test_hs256_keyed_with_the_public_key_is_alg_mismatch(key):
    # The classic confusion attack: HMAC with the public JWK as the secret.
    header = header_for(key, alg="HS256")
    unsigned = crafted(key, header, signature=b"").rsplit(b".", 1)[0]
    secrets_tried = [json.dumps(key.public_jwk).encode(), b64url_decode(key.public_jwk["x"])]
    for secret in secrets_tried:
        mac = hmac.new(secret, unsigned, hashlib.sha256).digest()
        raw = unsigned + b"." + b64url_encode(mac).encode()
        assert reason(raw, snapshot(record(key))) is RejectReason.ALG_MISMATCH


@pytest.mark.parametrize("alg", ["RS256", "ES384", "ES512", "PS256", "Ed448", "none", "NONE",
                                 "ed25519", "es256"])
def test_other_algorithms_are_alg_mismatch(alg):
    raw = crafted(ED_KEY, header_for(ED_KEY, alg=alg))
    assert reason(raw, snapshot(record(ED_KEY))) is RejectReason.ALG_MISMATCH


# --- source_mismatch -------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
@pytest.mark.parametrize("claimed", ["payment-switch", "bank-statement", "core-ledger2"])
def test_payload_source_other_than_the_keys_is_source_mismatch(key, claimed):
    raw = signed(key, payload(source=claimed))
    assert reason(raw, snapshot(record(key))) is RejectReason.SOURCE_MISMATCH


def test_key_of_another_source_cannot_sign_for_core_ledger():
    raw = signed(SWITCH_KEY, payload(source=SOURCE))
    assert reason(raw, snapshot(record(SWITCH_KEY))) is RejectReason.SOURCE_MISMATCH


# --- schema_invalid --------------------------------------------------------------------------


def _without(name: str) -> dict[str, Any]:
    body = payload()
    del body[name]
    return body


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_without("amount"), id="missing-amount"),
        pytest.param(_without("event_id"), id="missing-event_id"),
        pytest.param(_without("source"), id="missing-source"),
        pytest.param(_without("issued_at"), id="missing-issued_at"),
        pytest.param(_without("direction"), id="missing-direction"),
        pytest.param(payload(note="extra"), id="extra-field"),
        pytest.param(payload(signature="x"), id="extra-field-signature"),
        pytest.param(payload(amount=12.5), id="amount-number"),
        pytest.param(payload(amount="12,50"), id="amount-comma"),
        pytest.param(payload(currency="eur"), id="currency-lowercase"),
        pytest.param(payload(direction="sideways"), id="direction-enum"),
        pytest.param(payload(event_id="not-a-uuid"), id="event_id-pattern"),
        pytest.param(payload(event_id=None), id="event_id-null"),
        pytest.param(payload(account="DE1"), id="account-too-short"),
        pytest.param(payload(reference=""), id="reference-empty"),
        pytest.param(payload(issued_at="2025-03-14T12:00:00"), id="issued_at-no-offset"),
        pytest.param(payload(issued_at="2025-03-14 12:00:00Z"), id="issued_at-space"),
        pytest.param(payload(issued_at=1741953600), id="issued_at-epoch"),
        pytest.param(payload(issued_at="2025-13-14T12:00:00Z"), id="issued_at-month-13"),
        pytest.param(payload(issued_at="2025-02-30T12:00:00Z"), id="issued_at-feb-30"),
        pytest.param(payload(issued_at="2025-03-14T12:00:00+24:00"), id="issued_at-offset-24h"),
    ],
)
@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
def test_payload_not_fitting_the_schema_is_schema_invalid(key, body):
    assert reason(signed(key, body), snapshot(record(key))) is RejectReason.SCHEMA_INVALID


@pytest.mark.parametrize(
    "body",
    [
        # JSON Schema patterns are ECMA-262 regexes: "$" is the end of the string and "\d" is
        # [0-9]. Each value below is outside the published schema's intent.
        pytest.param(payload(event_id=payload()["event_id"] + "\n"),
                     id="event_id-trailing-newline"),
        pytest.param(payload(currency="EUR\n"), id="currency-trailing-newline"),
        pytest.param(payload(amount="100.00\n"), id="amount-trailing-newline"),
        pytest.param(payload(value_date="2025-03-14\n"), id="value_date-trailing-newline"),
        pytest.param(payload(amount="\u0661\u0662.\u0660\u0660"), id="amount-arabic-indic-digits"),
        pytest.param(payload(value_date="\uff12\uff10\uff12\uff15-03-14"),
                     id="value_date-fullwidth-digits"),
    ],
)
def test_schema_patterns_are_anchored_and_ascii(body):
    assert reason(signed(ED_KEY, body), snapshot(record(ED_KEY))) is RejectReason.SCHEMA_INVALID


@pytest.mark.parametrize("typ", [DOCUMENT_V1, "attest.approval.v1", "attest.audit.v1",
                                 "attest.transaction.v2", "JWT"])
def test_typ_not_accepted_on_the_topic_is_schema_invalid(typ):
    raw = signed(ED_KEY, typ=typ)
    assert reason(raw, snapshot(record(ED_KEY))) is RejectReason.SCHEMA_INVALID


def test_transaction_payload_under_document_typ_is_schema_invalid():
    policy = VerificationPolicy(POLICY.max_event_bytes, POLICY.max_clock_skew,
                                frozenset({TRANSACTION_V1, DOCUMENT_V1}))
    raw = signed(ED_KEY, typ=DOCUMENT_V1)
    assert reason(raw, snapshot(record(ED_KEY)), policy=policy) is RejectReason.SCHEMA_INVALID


# --- stale -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
@pytest.mark.parametrize(
    "offset",
    [timedelta(hours=-1), timedelta(hours=1), timedelta(seconds=-301), timedelta(seconds=301),
     timedelta(days=-365)],
    ids=["1h-old", "1h-ahead", "301s-old", "301s-ahead", "1y-old"],
)
def test_issued_at_outside_the_window_is_stale(key, offset):
    issued = (NOW + offset).isoformat().replace("+00:00", "Z")
    assert reason(signed(key, payload(issued_at=issued)), snapshot(record(key))) is (
        RejectReason.STALE
    )


@pytest.mark.parametrize("offset", [-300, -299, 0, 299, 300])
def test_issued_at_inside_the_window_is_accepted(offset):
    issued = (NOW + timedelta(seconds=offset)).isoformat().replace("+00:00", "Z")
    event = verify_event(signed(ED_KEY, payload(issued_at=issued)), snapshot(record(ED_KEY)),
                         NOW, POLICY)
    assert event.issued_at == NOW + timedelta(seconds=offset)


def test_stale_follows_the_policy_window():
    issued = (NOW - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    wide = VerificationPolicy(POLICY.max_event_bytes, timedelta(hours=2), POLICY.accepted_types)
    raw = signed(ED_KEY, payload(issued_at=issued))
    assert verify_event(raw, snapshot(record(ED_KEY)), NOW, wide).issued_at == NOW - timedelta(
        hours=1)
    assert reason(raw, snapshot(record(ED_KEY))) is RejectReason.STALE


def test_offset_is_applied_before_comparing_to_now():
    # 13:00 at +01:00 is 12:00 UTC (fresh); 12:00 at -01:00 is 13:00 UTC (stale).
    raw = signed(ED_KEY, payload(issued_at="2025-03-14T12:00:00-01:00"))
    assert reason(raw, snapshot(record(ED_KEY))) is RejectReason.STALE


# --- malformed -------------------------------------------------------------------------------

_VALID_JSON = encode(payload())
_NO_MEMO_JSON = encode({k: v for k, v in payload().items() if k != "memo"})


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"", id="empty"),
        pytest.param(_VALID_JSON[:-1], id="truncated"),
        pytest.param(_VALID_JSON + b"{}", id="trailing-data"),
        pytest.param(b"[" + _VALID_JSON + b"]", id="json-array"),
        pytest.param(b'"a string"', id="json-string"),
        pytest.param(b"null", id="json-null"),
        pytest.param(_VALID_JSON.replace(b"core-ledger", b"core-l\xffedger"), id="not-utf8"),
        pytest.param(json.dumps(payload()).encode("utf-16"), id="utf-16"),
        pytest.param(
            _VALID_JSON[:-1] + b',"source":"payment-switch"}', id="duplicate-source"
        ),
        pytest.param(
            b'{"amount":"1.00",' + _VALID_JSON[1:], id="duplicate-amount-first-wins?"
        ),
        pytest.param(_NO_MEMO_JSON[:-1] + b',"memo":NaN}', id="NaN"),
        pytest.param(_NO_MEMO_JSON[:-1] + b',"memo":Infinity}', id="Infinity"),
        pytest.param(_NO_MEMO_JSON[:-1] + b',"memo":-Infinity}', id="-Infinity"),
        pytest.param(_VALID_JSON[:-1] + b',"memo":' + b"[" * 20_000 + b"]" * 20_000 + b"}",
                     id="deep-nesting"),
    ],
)
@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
def test_payload_that_is_not_a_strict_json_object_is_malformed(key, body):
    assert reason(signed(key, body), snapshot(record(key))) is RejectReason.MALFORMED


def test_duplicate_key_payload_is_malformed_even_when_each_value_is_valid():
    # Both values of "direction" fit the schema; a lenient parser would keep one silently.
    body = _VALID_JSON[:-1] + b',"direction":"debit","direction":"credit"}'
    assert b'"direction"' in _VALID_JSON
    assert reason(signed(ED_KEY, body), snapshot(record(ED_KEY))) is RejectReason.MALFORMED


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"a.b", id="2-parts"),
        pytest.param(b"a.b.c.d", id="4-parts"),
        pytest.param(signed(ED_KEY) + b"=", id="padding"),
        pytest.param(signed(ED_KEY).replace(b".", b"+.", 1), id="plus"),
    ],
)
def test_structurally_broken_token_is_malformed(raw):
    assert reason(raw, snapshot(record(ED_KEY))) is RejectReason.MALFORMED


@pytest.mark.parametrize(
    "extra", [{"jwk": {}}, {"crit": ["b64"]}, {"jku": "https://attacker.example/"}, {"b64": False}]
)
def test_signed_token_with_extra_header_member_is_malformed(extra):
    raw = crafted(ED_KEY, {**header_for(ED_KEY), **extra})
    assert reason(raw, snapshot(record(ED_KEY))) is RejectReason.MALFORMED


def test_signed_token_with_duplicate_header_member_is_malformed():
    header = (f'{{"alg":"Ed25519","kid":"{ED_KEY.kid}","typ":"{DOCUMENT_V1}",'
              f'"typ":"{TRANSACTION_V1}"}}')
    assert reason(crafted(ED_KEY, header), snapshot(record(ED_KEY))) is RejectReason.MALFORMED


# --- too_large -------------------------------------------------------------------------------


def test_event_over_the_size_limit_is_too_large():
    raw = signed(ED_KEY)
    small = VerificationPolicy(len(raw) - 1, POLICY.max_clock_skew, POLICY.accepted_types)
    assert reason(raw, snapshot(record(ED_KEY)), policy=small) is RejectReason.TOO_LARGE
    exact = VerificationPolicy(len(raw), POLICY.max_clock_skew, POLICY.accepted_types)
    assert verify_event(raw, snapshot(record(ED_KEY)), NOW, exact).kid == ED_KEY.kid


def test_oversized_memo_is_too_large_before_anything_else():
    raw = signed(ED_KEY, payload(memo="x" * 100_000))
    assert reason(raw, {}) is RejectReason.TOO_LARGE
