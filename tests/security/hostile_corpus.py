"""A corpus of hostile messages, each with the reason code it must be rejected with.

Used twice: by the pure verifier tests, and by an integration test that sends every entry
through a real worker and finds each one in the dead-letter topic.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scenarios.finance import transaction_payloads
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from security.keyfiles import SigningKey, generate_key
from security.reasons import RejectReason as R
from security.registry import KeyRecord
from tests.support.jws import b64, sign_raw


@dataclass(frozen=True)
class HostileCase:
    name: str
    raw: bytes
    reason: R


@dataclass(frozen=True)
class CorpusKeys:
    """The registered keys the corpus is built against."""

    ed: SigningKey          # Ed25519, usable
    es: SigningKey          # ES256, usable
    revoked: SigningKey
    expired: SigningKey
    now: datetime
    bound: SigningKey       # bound to documents of its own department only (BOUND_TYPS)

    def records(self) -> dict[str, KeyRecord]:
        def rec(key: SigningKey, **kw: Any) -> KeyRecord:
            return KeyRecord(kid=key.kid, source=key.source, alg=key.alg,
                             public_jwk=key.public_jwk, **kw)

        return {
            self.ed.kid: rec(self.ed),
            self.es.kid: rec(self.es),
            self.revoked.kid: rec(self.revoked, revoked_at=self.now - timedelta(hours=1),
                                  revoked_reason="corpus"),
            self.expired.kid: rec(self.expired, not_after=self.now - timedelta(days=1)),
            self.bound.kid: rec(self.bound, typs=BOUND_TYPS, department=self.bound.source),
        }


#: The schemas ``CorpusKeys.bound`` may sign: not the transactions the corpus sends.
BOUND_TYPS = frozenset({DOCUMENT_V1})


def make_keys(source: str, now: datetime) -> CorpusKeys:
    return CorpusKeys(
        ed=generate_key(source), es=generate_key(source, "ES256"),
        revoked=generate_key(source), expired=generate_key(source), now=now,
        bound=generate_key(source),
    )


def build_corpus(keys: CorpusKeys, topic_types: frozenset[str] = frozenset({TRANSACTION_V1})
                 ) -> list[HostileCase]:
    """At least 100 distinct hostile messages for the transactions topic."""
    now = keys.now
    payloads = iter(transaction_payloads(400, keys.ed.source, now=now))
    cases: list[HostileCase] = []

    def add(name: str, raw: bytes, reason: R) -> None:
        cases.append(HostileCase(name, raw, reason))

    def fresh() -> dict[str, Any]:
        return dict(next(payloads))

    def body(payload: Any) -> bytes:
        return json.dumps(payload).encode()

    ed_header = {"alg": "Ed25519", "kid": keys.ed.kid, "typ": TRANSACTION_V1}

    def good(payload: dict[str, Any] | None = None, key: SigningKey | None = None) -> bytes:
        key = key or keys.ed
        return sign_raw(key, {"alg": key.alg, "kid": key.kid, "typ": TRANSACTION_V1},
                        body(payload or fresh()))

    # -- truncated tokens (cut inside header or payload: fewer than three parts) --------
    for cut in (0, 1, 5, 10, 20, 30, 40, 50, 60, 80, 100, 150, 200, 250):
        token = good()
        add(f"truncated at {cut}", token[:cut] if cut else b"", R.MALFORMED)
    token = good()
    add("signature cut off", token.rsplit(b".", 1)[0] + b".", R.BAD_SIGNATURE)
    add("signature removed", token.rsplit(b".", 1)[0], R.MALFORMED)

    # -- extra or missing dots ---------------------------------------------------------
    for name, raw in (("two dots only", b".."), ("three dots", b"..."),
                      ("four parts", good() + b".AAAA"), ("leading dot", b"." + good()),
                      ("trailing dot", good() + b"."), ("dots everywhere", b"a.b.c.d.e.f")):
        add(name, raw, R.MALFORMED)

    # -- non-base64url characters in each part ---------------------------------------
    for part in range(3):
        for char in (b"!", b"+", b"/", b"=", b" ", b"\n", b"\xc3\xa9"):
            pieces = good().split(b".")
            pieces[part] = pieces[part][:8] + char + pieces[part][8:]
            add(f"part {part} with {char!r}", b".".join(pieces), R.MALFORMED)
    add("trailing newline", good() + b"\n", R.MALFORMED)
    add("utf-16 token", good().decode().encode("utf-16"), R.MALFORMED)
    add("random binary", hashlib.sha512(b"corpus").digest() * 3, R.MALFORMED)

    # -- header tricks -----------------------------------------------------------------
    payload_bytes = body(fresh())
    add("alg none", b64(json.dumps({"alg": "none", "kid": keys.ed.kid,
                                    "typ": TRANSACTION_V1}).encode())
        + b"." + b64(payload_bytes) + b".", R.ALG_MISMATCH)
    hs_input = b64(json.dumps({"alg": "HS256", "kid": keys.ed.kid, "typ": TRANSACTION_V1}).encode()) \
        + b"." + b64(payload_bytes)
    secret = keys.ed.public_jwk["x"].encode()
    add("HS256 with the public key as secret",
        hs_input + b"." + b64(hmac.new(secret, hs_input, hashlib.sha256).digest()), R.ALG_MISMATCH)
    for alg in ("RS256", "ES384", "PS256", "ed25519", "EDDSA", "Ed448", "ES256K"):
        add(f"alg {alg}", sign_raw(keys.ed, {**ed_header, "alg": alg}, body(fresh())),
            R.ALG_MISMATCH)
    add("ES256 claimed for an Ed25519 key",
        sign_raw(keys.ed, {**ed_header, "alg": "ES256"}, body(fresh())), R.ALG_MISMATCH)
    add("Ed25519 claimed for an ES256 key",
        sign_raw(keys.es, {"alg": "Ed25519", "kid": keys.es.kid, "typ": TRANSACTION_V1},
                 body(fresh())), R.ALG_MISMATCH)
    for extra in ({"crit": ["exp"]}, {"jwk": keys.ed.public_jwk}, {"jku": "https://evil.example"},
                  {"x5u": "https://evil.example"}, {"b64": False}, {"cty": "JWT"}):
        add(f"header with {next(iter(extra))}", sign_raw(keys.ed, {**ed_header, **extra},
                                                         body(fresh())), R.MALFORMED)
    for missing in ("alg", "kid", "typ"):
        header = {k: v for k, v in ed_header.items() if k != missing}
        add(f"header without {missing}", sign_raw(keys.ed, header, body(fresh())), R.MALFORMED)
    for member, value in (("kid", 7), ("kid", None), ("kid", ""), ("alg", ["Ed25519"]),
                          ("typ", {"v": 1})):
        add(f"header {member}={value!r}", sign_raw(keys.ed, {**ed_header, member: value},
                                                   body(fresh())), R.MALFORMED)
    dup_header = (b'{"alg":"Ed25519","kid":"' + keys.ed.kid.encode() + b'","typ":"'
                  + TRANSACTION_V1.encode() + b'","alg":"none"}')
    add("duplicated alg in header", sign_raw(keys.ed, dup_header, body(fresh())), R.MALFORMED)
    add("header is an array", sign_raw(keys.ed, b'["Ed25519"]', body(fresh())), R.MALFORMED)
    add("header not JSON", sign_raw(keys.ed, b"alg=Ed25519", body(fresh())), R.MALFORMED)

    # -- unicode look-alikes and near misses in kid --------------------------------------
    kid = keys.ed.kid
    for name, lookalike in (
        ("cyrillic e", kid.replace("e", "\u0435", 1)), ("cyrillic o", kid.replace("o", "\u043e", 1)),
        ("fullwidth dash", kid.replace("-", "\uff0d", 1)), ("zero width space", kid[:3] + "\u200b" + kid[3:]),
        ("trailing space", kid + " "), ("upper case", kid.upper()),
        ("combining accent", kid[:2] + "\u0301" + kid[2:]), ("nfkd ligature", "\ufb01" + kid),
    ):
        add(f"kid look-alike: {name}", sign_raw(keys.ed, {**ed_header, "kid": lookalike},
                                                body(fresh())), R.UNKNOWN_KEY)
    add("unknown kid", sign_raw(keys.ed, {**ed_header, "kid": "nobody-2026"}, body(fresh())),
        R.UNKNOWN_KEY)

    # -- key state ----------------------------------------------------------------------
    add("revoked key", good(key=keys.revoked), R.REVOKED_KEY)
    add("expired key", good(key=keys.expired), R.EXPIRED_KEY)

    # -- signatures -----------------------------------------------------------------------
    a, b = good().split(b"."), good().split(b".")
    add("signature of another event", b".".join((a[0], a[1], b[2])), R.BAD_SIGNATURE)
    for i in (0, 10, 42, 85):
        sig = bytearray(base64.urlsafe_b64decode(a[2] + b"=="))
        sig[i % len(sig)] ^= 0x01
        add(f"signature bit {i} flipped", b".".join((a[0], a[1], b64(bytes(sig)))), R.BAD_SIGNATURE)
    es_token = good(key=keys.es).split(b".")
    raw_sig = base64.urlsafe_b64decode(es_token[2] + b"==")
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    der = encode_dss_signature(int.from_bytes(raw_sig[:32], "big"), int.from_bytes(raw_sig[32:], "big"))
    add("ES256 DER signature", b".".join((es_token[0], es_token[1], b64(der))), R.BAD_SIGNATURE)
    add("ES256 zero signature", b".".join((es_token[0], es_token[1], b64(bytes(64)))), R.BAD_SIGNATURE)
    add("payload edited after signing",
        b".".join((a[0], b64(body({**json.loads(base64.urlsafe_b64decode(a[1] + b"==")),
                                   "amount": "999999.00"})), a[2])), R.BAD_SIGNATURE)

    # -- payloads that are not JSON objects (validly signed) ---------------------------------
    for name, payload in (
        ("payload not JSON", b"amount=100"), ("payload array", b"[1,2,3]"),
        ("payload string", b'"hello"'), ("payload null", b"null"),
        ("payload NaN", b'{"amount": NaN}'), ("payload Infinity", b'{"amount": -Infinity}'),
        ("payload latin-1",
         json.dumps({**fresh(), "memo": "caf\u00e9"}, ensure_ascii=False).encode("latin-1")),
        ("JSON bomb: deep nesting", b"[" * 20000 + b"]" * 20000),
        ("JSON bomb: huge integer", b'{"amount": ' + b"9" * 5000 + b"}"),
        ("payload trailing garbage", body(fresh()) + b" {}"),
    ):
        add(name, sign_raw(keys.ed, ed_header, payload), R.MALFORMED)
    dup = json.dumps(fresh())[:-1].encode() + b', "amount": "1000000.00"}'
    add("duplicated amount in payload", sign_raw(keys.ed, ed_header, dup), R.MALFORMED)
    dup_id = json.dumps(fresh())[:-1].encode() + b', "event_id": "00000000-0000-4000-8000-000000000000"}'
    add("duplicated event_id in payload", sign_raw(keys.ed, ed_header, dup_id), R.MALFORMED)

    # -- wrong types and schema violations ----------------------------------------------------
    for field, value in (
        ("amount", 100.5), ("amount", "1e5"), ("amount", "12,50"), ("amount", "\u0661\u0662.00"),
        ("event_id", 12345), ("event_id", "not-a-uuid"), ("event_id", "ABCDEF00-0000-4000-8000-000000000000"),
        ("currency", "eur"), ("currency", "EURO"), ("currency", "EUR\n"), ("value_date", "25/11/2026"),
        ("direction", "sideways"), ("source", ["core-ledger"]), ("issued_at", 1764000000),
        ("issued_at", "yesterday"), ("counterparty", None), ("account", "1"),
    ):
        add(f"{field}={value!r}", good({**fresh(), field: value}), R.SCHEMA_INVALID)
    extra = fresh()
    extra["admin"] = True
    add("extra field", good(extra), R.SCHEMA_INVALID)
    missing = fresh()
    del missing["amount"]
    add("missing amount", good(missing), R.SCHEMA_INVALID)
    add("document typ on the transactions topic",
        sign_raw(keys.ed, {**ed_header, "typ": DOCUMENT_V1}, body(fresh())), R.SCHEMA_INVALID)
    add("unknown typ", sign_raw(keys.ed, {**ed_header, "typ": "attest.transaction.v9"},
                                body(fresh())), R.SCHEMA_INVALID)

    # -- control characters in a validly signed event (issue 14: a NUL crash-looped workers) --
    # json.dumps escapes them, so each arrives as a \\u escape that parses to the character.
    for field in ("memo", "counterparty", "reference", "account", "currency"):
        for name, char in (("NUL", "\x00"), ("ESC", "\x1b"), ("DEL", "\x7f"),
                           ("lone surrogate", "\udc00")):
            payload = fresh()
            payload[field] = payload[field][:2] + char + payload[field][2:]
            add(f"{name} in {field}", good(payload), R.SCHEMA_INVALID)

    # -- claims: source and time --------------------------------------------------------------
    add("source claims another producer", good({**fresh(), "source": "payment-switch"}),
        R.SOURCE_MISMATCH)
    add("a key bound to other schemas", good(key=keys.bound), R.SCOPE_MISMATCH)
    for name, delta in (("an hour old", -3600), ("a day old", -86400), ("from the future", 3600),
                        ("a year old", -86400 * 365)):
        stamp = (now + timedelta(seconds=delta)).isoformat().replace("+00:00", "Z")
        add(f"issued_at {name}", good({**fresh(), "issued_at": stamp}), R.STALE)

    # -- size ------------------------------------------------------------------------------------
    for size in (65 * 1024, 100 * 1024, 200 * 1024):
        padded = {**fresh(), "memo": "x" * size}
        add(f"{size // 1024} KiB event", good(padded), R.TOO_LARGE)
    add("64 KiB of dots", b"." * (64 * 1024 + 1), R.TOO_LARGE)

    assert len({c.raw for c in cases}) == len(cases), "corpus entries must be distinct"
    return cases


