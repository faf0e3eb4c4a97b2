"""``attest bench verify``: the two loops it compares are timed in interleaved rounds."""

from __future__ import annotations

from bench.verify import _rates, measure


def test_rounds_of_the_two_loops_alternate() -> None:
    calls: list[str] = []
    full, raw = _rates(lambda: calls.append("full"), lambda: calls.append("raw"), 10, 3)
    assert calls == ["full", "raw"] * 3
    assert full > 0 and raw > 0


def test_measure_verifies_real_tokens_for_both_algorithms() -> None:
    for alg in ("Ed25519", "ES256"):
        full, raw = measure(alg, 100, 1)
        # A token that failed verification would raise here; the rates are real timings.
        assert 0 < full < raw * 5
