"""decode_compact: every structural defect of a compact JWS maps to malformed or too_large."""

from __future__ import annotations

import json

import pytest

from security.errors import Rejection
from security.jws import MAX_HEADER_BYTES, decode_compact
from security.reasons import RejectReason
from tests.support import jws
from tests.support.jws import b64

MAX = 64 * 1024
HEADER = {"alg": "Ed25519", "kid": "core-ledger-20250101-00c0ffee", "typ": "attest.transaction.v1"}
PAYLOAD = b'{"event_id":"x"}'
SIGNATURE = bytes(range(64))


def token(header: dict | str | bytes = HEADER, payload: bytes = PAYLOAD,
          signature: bytes = SIGNATURE) -> bytes:
    return jws.token(header, payload, signature)


def malformed(raw: bytes, max_bytes: int = MAX) -> Rejection:
    with pytest.raises(Rejection) as info:
        decode_compact(raw, max_bytes)
    assert info.value.reason is RejectReason.MALFORMED, info.value
    return info.value


def test_well_formed_token_decodes_into_its_parts():
    raw = token()
    decoded = decode_compact(raw, MAX)
    assert decoded.alg == HEADER["alg"]
    assert decoded.kid == HEADER["kid"]
    assert decoded.typ == HEADER["typ"]
    assert decoded.payload == PAYLOAD
    assert decoded.signature == SIGNATURE
    assert decoded.signing_input == raw.rsplit(b".", 1)[0]


def test_header_member_order_and_whitespace_do_not_matter():
    text = '{ "typ" : "attest.transaction.v1",\n "kid":"k1", "alg":"ES256" }'
    decoded = decode_compact(token(text), MAX)
    assert (decoded.alg, decoded.kid, decoded.typ) == ("ES256", "k1", "attest.transaction.v1")


def test_empty_payload_and_signature_are_structurally_fine():
    # Decoding does not judge them; the signature check and payload parse do.
    decoded = decode_compact(token(payload=b"", signature=b""), MAX)
    assert decoded.payload == b"" and decoded.signature == b""


# --- the three-part structure ----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(token().replace(b".", b""), id="1-part"),
        pytest.param(b".".join(token().split(b".")[:2]), id="2-parts"),
        pytest.param(token() + b"." + b64(b"extra"), id="4-parts"),
        pytest.param(token() + b".", id="4-parts-trailing-dot"),
        pytest.param(token() + b".." + b64(b"x"), id="5-parts-jwe-like"),
        pytest.param(b"..", id="3-empty-parts"),
        pytest.param(b".." + b64(SIGNATURE), id="empty-header"),
    ],
)
def test_wrong_number_of_parts_or_empty_header_is_malformed(raw):
    malformed(raw)


def test_json_serialization_is_malformed():
    header, payload, signature = token().decode().split(".")
    raw = json.dumps({"protected": header, "payload": payload, "signature": signature}).encode()
    malformed(raw)


# --- base64url -----------------------------------------------------------------------------------


@pytest.mark.parametrize("part", [0, 1, 2], ids=["header", "payload", "signature"])
@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda p: p + b"=", id="one-padding-char"),
        pytest.param(lambda p: p + b"==", id="two-padding-chars"),
        pytest.param(lambda p: p[:2] + b"=" + p[2:], id="padding-inside"),
        pytest.param(lambda p: p[:2] + b"+" + p[3:], id="plus"),
        pytest.param(lambda p: p[:2] + b"/" + p[3:], id="slash"),
        pytest.param(lambda p: p[:2] + b"!" + p[3:], id="bang"),
        pytest.param(lambda p: p[:2] + b" " + p[3:], id="space"),
        pytest.param(lambda p: p + b"\n", id="trailing-newline"),
        pytest.param(lambda p: p[:2] + b"\xc3\xa9" + p[3:], id="non-ascii"),
        pytest.param(lambda p: p[:2] + b"\x00" + p[3:], id="nul"),
        pytest.param(lambda p: p + b"A" * ((1 - len(p)) % 4 or 4), id="length-1-mod-4"),
    ],
)
def test_non_base64url_part_is_malformed(part, mangle):
    parts = token().split(b".")
    parts[part] = mangle(parts[part])
    malformed(b".".join(parts))


@pytest.mark.parametrize("part", [0, 1, 2], ids=["header", "payload", "signature"])
def test_padded_part_with_length_multiple_of_four_is_malformed(part):
    parts = token().split(b".")
    value = parts[part]
    # Re-encode with standard padding: same bytes, different (padded) text.
    padded = value + b"=" * (-len(value) % 4)
    if padded == value:
        padded = value + b"===="
    parts[part] = padded
    malformed(b".".join(parts))


def test_non_canonical_base64url_is_malformed():
    # "e30" is "{}"; "e31" decodes to the same bytes with a non-zero trailing bit.
    raw = b"e31." + b64(PAYLOAD) + b"." + b64(SIGNATURE)
    malformed(raw)


# --- the protected header --------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(json.dumps(HEADER).encode("utf-16"), id="utf-16"),
        pytest.param(json.dumps(HEADER).encode()[:-1], id="truncated"),
        pytest.param(json.dumps(HEADER).encode() + b"{}", id="trailing-data"),
        pytest.param(json.dumps([HEADER]).encode(), id="json-array"),
        pytest.param(b'"Ed25519"', id="json-string"),
        pytest.param(b"42", id="json-number"),
        pytest.param(b"null", id="json-null"),
        pytest.param(b"true", id="json-true"),
        pytest.param(b"{'alg': 'Ed25519', 'kid': 'k', 'typ': 't'}", id="python-repr"),
        pytest.param(b'{"alg":"Ed25519","kid":"k","typ":"t",}', id="trailing-comma"),
    ],
)
def test_header_that_is_not_a_json_object_is_malformed(header):
    malformed(token(header))


@pytest.mark.parametrize(
    "header",
    [
        '{"alg":"Ed25519","alg":"ES256","kid":"k","typ":"t"}',
        '{"alg":"ES256","kid":"k","typ":"t","alg":"ES256"}',
        '{"alg":"Ed25519","kid":"a","kid":"b","typ":"t"}',
        '{"alg":"Ed25519","kid":"k","typ":"t","typ":"t"}',
        '{"alg":"Ed25519","kid":"k","typ":"t","x":{"a":1,"a":2}}',
    ],
)
def test_header_with_duplicate_members_is_malformed(header):
    malformed(token(header))


@pytest.mark.parametrize(
    "extra",
    [
        {"crit": ["exp"]},
        {"crit": []},
        {"jwk": {"kty": "OKP", "crv": "Ed25519",
                 "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}},
        {"jku": "https://attacker.example/keys.json"},
        {"x5u": "https://attacker.example/cert.pem"},
        {"x5c": ["MIIB"]},
        {"x5t": "abc"},
        {"b64": False},
        {"cty": "json"},
        {"zip": "DEF"},
        {"enc": "A256GCM"},
        {"Alg": "none"},
        {"": "x"},
    ],
    ids=lambda extra: next(iter(extra)) or "empty-name",
)
def test_header_with_extra_members_is_malformed(extra):
    detail = malformed(token({**HEADER, **extra})).detail
    assert "unsupported header members" in detail


@pytest.mark.parametrize("missing", ["alg", "kid", "typ"])
def test_header_missing_a_member_is_malformed(missing):
    header = {k: v for k, v in HEADER.items() if k != missing}
    assert repr(missing) in malformed(token(header)).detail


@pytest.mark.parametrize("member", ["alg", "kid", "typ"])
@pytest.mark.parametrize(
    "value",
    [None, 1, 0, 1.5, True, False, ["Ed25519"], {"name": "Ed25519"}, ""],
    ids=["null", "one", "zero", "float", "true", "false", "list", "object", "empty-string"],
)
def test_header_member_that_is_not_a_non_empty_string_is_malformed(member, value):
    malformed(token({**HEADER, member: value}))


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_header_with_non_json_constant_is_malformed(constant):
    malformed(token(f'{{"alg":{constant},"kid":"k","typ":"t"}}'))


def test_oversized_header_is_malformed():
    header = {**HEADER, "kid": "k" * (MAX_HEADER_BYTES * 2)}
    raw = token(header)
    assert len(raw) < MAX
    malformed(raw)


def test_header_just_under_the_size_limit_decodes():
    padding = MAX_HEADER_BYTES - len(json.dumps({**HEADER, "kid": ""}).encode())
    header = {**HEADER, "kid": "k" * padding}
    assert len(json.dumps(header).encode()) == MAX_HEADER_BYTES
    assert decode_compact(token(header), MAX).kid == "k" * padding


# --- size ------------------------------------------------------------------------------------


def test_oversized_token_is_too_large():
    raw = token(payload=b"x" * 2000)
    with pytest.raises(Rejection) as info:
        decode_compact(raw, len(raw) - 1)
    assert info.value.reason is RejectReason.TOO_LARGE


def test_token_of_exactly_the_limit_is_not_too_large():
    raw = token(payload=b"x" * 2000)
    assert decode_compact(raw, len(raw)).payload == b"x" * 2000


@pytest.mark.parametrize("raw", [b"x" * 5000, b"." * 5000, b"\xff" * 5000])
def test_oversize_wins_over_malformed(raw):
    with pytest.raises(Rejection) as info:
        decode_compact(raw, 4096)
    assert info.value.reason is RejectReason.TOO_LARGE
