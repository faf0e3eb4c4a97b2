"""Hostile input against the pure verifier: the corpus, and property-based fuzzing."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.catalog import TRANSACTION_V1
from security.errors import Rejection
from security.reasons import RejectReason
from security.verification import VerificationPolicy, verify_event
from tests.security.hostile_corpus import build_corpus, make_keys
from tests.support.jws import b64, sign_raw

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
KEYS = make_keys("core-ledger", NOW)
SNAPSHOT = KEYS.records()
POLICY = VerificationPolicy(64 * 1024, timedelta(minutes=5), frozenset({TRANSACTION_V1}))
CORPUS = build_corpus(KEYS)


def test_corpus_is_large_and_covers_every_reason_but_replay() -> None:
    assert len(CORPUS) >= 100
    covered = Counter(case.reason for case in CORPUS)
    # Both are decided after verification, against the database; the nested-token reasons
    # belong to ``security.nested`` (tests/security/test_nested_jwe.py), not to verify_event.
    assert set(RejectReason) - set(covered) == {
        RejectReason.REPLAYED, RejectReason.UNSTORABLE,
        RejectReason.UNDECRYPTABLE, RejectReason.ENCRYPTION_REQUIRED,
    }


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_each_hostile_message_is_rejected_with_its_reason(case) -> None:  # noqa: ANN001
    with pytest.raises(Rejection) as caught:
        verify_event(case.raw, SNAPSHOT, NOW, POLICY)
    assert caught.value.reason == case.reason, caught.value.detail


def _only_rejections(raw: bytes) -> None:
    """The property: any input either verifies or raises ``Rejection``; nothing else escapes."""
    try:
        verify_event(raw, SNAPSHOT, NOW, POLICY)
    except Rejection:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_never_crash_the_decoder(raw: bytes) -> None:
    _only_rejections(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                      max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(header=st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "x"]), json_values,
                              max_size=5),
       payload=json_values)
def test_structured_tokens_never_crash_the_verifier(header: dict, payload: object) -> None:
    import json

    raw = sign_raw(KEYS.ed, json.dumps(header).encode(), json.dumps(payload).encode())
    _only_rejections(raw)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=5))
def test_dot_joined_base64_parts_never_crash(parts: list[bytes]) -> None:
    _only_rejections(b".".join(b64(p) for p in parts))
