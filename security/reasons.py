"""The stable reason codes of rejected events, as written to the dead-letter topic.

These strings are a public contract (docs/events.md): dashboards and producers key on them.
"""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    REVOKED_KEY = "revoked_key"
    EXPIRED_KEY = "expired_key"
    ALG_MISMATCH = "alg_mismatch"
    SOURCE_MISMATCH = "source_mismatch"
    #: The key is bound to other schemas (``typ``) or another department/agency than the
    #: event's (``attest keys add --typ/--department``).
    SCOPE_MISMATCH = "scope_mismatch"
    MALFORMED = "malformed"
    SCHEMA_INVALID = "schema_invalid"
    REPLAYED = "replayed"
    STALE = "stale"
    TOO_LARGE = "too_large"
    #: Verified, but the database refused this one row (a value it cannot hold). The rest of
    #: the batch is stored; the row can be retried with `attest dlq retry` once fixed.
    UNSTORABLE = "unstorable"
    #: A nested token (JWE of the JWS, docs/events.md) that cannot be opened: no held intake
    #: key has its ``kid``, or the key unwrap or the AES-GCM tag fails (a tampered or
    #: misaddressed ciphertext). The detail says which.
    UNDECRYPTABLE = "undecryptable"
    #: A plain JWS, validly signed, from a source whose events must arrive encrypted
    #: (``ATTEST_ENCRYPTED_SOURCES``): refused so restricted fields never sit in clear on
    #: the intake topic unnoticed.
    ENCRYPTION_REQUIRED = "encryption_required"
