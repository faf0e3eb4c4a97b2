"""The unverified event_id a token claims: used by intake's rejections and by replays to
correlate, so it must find the claim in tampered tokens and never raise on hostile bytes."""

from __future__ import annotations

import base64

import pytest

from security.jws import claimed_event_id

EVENT_ID = "0b6e7a52-6a4e-4f0c-9d43-1f2a3b4c5d6e"


def _token(payload: bytes) -> bytes:
    part = base64.urlsafe_b64encode(payload).rstrip(b"=")
    return b"eyJhbGciOiJFZDI1NTE5In0." + part + b".c2ln"


def test_the_claim_is_found_in_a_valid_payload_and_in_one_that_no_longer_parses() -> None:
    assert claimed_event_id(_token(b'{"amount": 1, "event_id": "%s"}' % EVENT_ID.encode())) == EVENT_ID
    assert claimed_event_id(_token(b'{"event_id" : "%s", broken' % EVENT_ID.encode())) == EVENT_ID


@pytest.mark.parametrize("token", [
    b"",
    b"not a token",
    b"a.b",
    b"a.b.c.d",
    b"eyJ9.!!!notbase64!!!.c2ln",
    _token(b'{"event_id": 42}'),
    _token(b'{"event_id": "has spaces in it"}'),
    _token(b'{"event_id": "%s"}' % (b"a" * 65)),
    b"h." + b"A" * (4 * 65536 + 4) + b".s",
])
def test_no_claim_is_none_and_nothing_raises(token: bytes) -> None:
    assert claimed_event_id(token) is None
