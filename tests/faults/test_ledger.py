"""The ledger's replay rule: whichever copy of a replayed message was stored is the original."""

from __future__ import annotations

from bench.ledger import Planned, resolve_replays


def _plan() -> list[Planned]:
    original = Planned("t", b"k", b"token", None, "e1", partition=0, offset=3)
    copy = Planned("t", b"k", b"token", "replayed", "e1", partition=0, offset=9)
    other = Planned("t", b"j", b"other", None, "e2", partition=1, offset=0)
    return [original, copy, other]


def test_the_original_stays_the_original_when_it_was_stored() -> None:
    plan = _plan()
    assert resolve_replays(plan, {"e1": ("t", 0, 3), "e2": ("t", 1, 0)}) == plan


def test_a_stored_copy_swaps_fates_with_the_original() -> None:
    resolved = resolve_replays(_plan(), {"e1": ("t", 0, 9), "e2": ("t", 1, 0)})
    assert [(p.offset, p.reason) for p in resolved] == [(3, "replayed"), (9, None), (0, None)]
