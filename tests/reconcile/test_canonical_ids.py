"""A match's and a break's record ids are stored in one order, whatever order they arrived in.

Found by tests/faults/test_recon_restart.py: a killed and restarted worker stored an
N:1 match with its left ids in another order than an uninterrupted run (same match id, same
records), because which record of a group arrives first depends on how partitions are read.
"""

from __future__ import annotations

from decimal import Decimal

from reconcile.models import Break, BreakReason, Match, Stage, Status
from reconcile.quality import score

A, B, C = ("00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b",
           "00000000-0000-4000-8000-00000000000c")


def test_match_ids_are_sorted_and_the_match_id_does_not_depend_on_arrival():
    one = Match("l~r", Stage.EXACT, "rule", 1.0, Status.MATCHED, (B, A), (C,), Decimal(0), "EUR")
    two = Match("l~r", Stage.EXACT, "rule", 1.0, Status.MATCHED, (A, B), (C,), Decimal(0), "EUR")
    assert one.left_ids == two.left_ids == (A, B)
    assert one.match_id == two.match_id


def test_break_related_ids_are_sorted():
    assert Break("l~r", A, "l", BreakReason.AMOUNT_DIFFERS, "", related_ids=(C, B)).related_ids == (B, C)


def test_a_one_sided_match_scores_whatever_order_the_truth_lists_its_records_in():
    reversal = Match("l~r", Stage.REVERSAL, "reversal of reference", 1.0, Status.MATCHED, (B, A), ())
    for link in ([A, B], [B, A]):
        truth = {"pairings": {"l~r": {"links": [link], "breaks": []}}}
        assert score([reversal], [], truth).precision == 1.0
