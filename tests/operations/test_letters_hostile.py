"""Dead letters are whatever a hostile producer sent: reading them never raises."""

from __future__ import annotations

import base64

from operations.letters import claimed_payload


def test_a_deeply_nested_payload_claims_nothing_instead_of_raising() -> None:
    nested = base64.urlsafe_b64encode(b"[" * 100_000 + b"]" * 100_000).rstrip(b"=")
    assert claimed_payload(b"e30." + nested + b".c2ln") == {}
