"""Scoring matches against a generator's ground truth: precision and recall, per stage.

A match is scored by its links: every (left id, right id) pair it puts together (and, for a
reversal, the two records of one side). Links are what an analyst would have to undo when
wrong, and they count a 1:N match by how much of it is right rather than all or nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconcile.models import Break, Match, Status


def links_of(match: Match) -> set[tuple[str, str]]:
    """The match's links as unordered pairs (``_norm``): a one-sided match (a reversal) links
    its records in no particular order, and the truth's order is the generator's."""
    if match.left_ids and match.right_ids:
        return {_norm((a, b)) for a in match.left_ids for b in match.right_ids}
    ids = match.left_ids or match.right_ids
    return {_norm((a, b)) for i, a in enumerate(ids) for b in ids[i + 1:]}


def _norm(link: Iterable[str]) -> tuple[str, str]:
    a, b = link
    return (a, b) if a <= b else (b, a)


@dataclass
class Quality:
    """Precision and recall of proposed links (matched and suggested), and per stage."""

    precision: float
    recall: float
    proposed: int
    expected: int
    correct: int
    auto_precision: float
    by_stage: dict[str, dict[str, float]] = field(default_factory=dict)
    break_reasons_correct: int = 0
    breaks_expected: int = 0
    breaks_found: int = 0
    misses: Counter[str] = field(default_factory=Counter)
    false_links: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "precision": round(self.precision, 4), "recall": round(self.recall, 4),
            "auto_precision": round(self.auto_precision, 4),
            "proposed_links": self.proposed, "expected_links": self.expected, "correct_links": self.correct,
            "by_stage": self.by_stage,
            "breaks": {"expected": self.breaks_expected, "found": self.breaks_found,
                       "reason_correct": self.break_reasons_correct},
            "misses": dict(self.misses), "false_links": dict(self.false_links),
        }


def _ratio(a: int, b: int) -> float:
    return a / b if b else 1.0


def score(matches: Iterable[Match], breaks: Iterable[Break], truth: Mapping[str, Any],
          kinds: Mapping[str, str] | None = None) -> Quality:
    """Score ``matches`` and ``breaks`` against ``truth`` (``scenarios.finance`` format).

    Rejected matches are not proposals. ``kinds`` (record id -> mess kind), when given,
    labels misses and false links so the report can say what they are.
    """
    expected: set[tuple[str, str]] = set()
    expected_breaks: dict[tuple[str, str], str] = {}
    for pairing, part in truth["pairings"].items():
        expected |= {_norm(link) for link in part["links"]}
        for b in part["breaks"]:
            expected_breaks[(pairing, b["id"])] = b["reason"]
    stage_links: dict[str, set[tuple[str, str]]] = {}
    proposed: set[tuple[str, str]] = set()
    auto: set[tuple[str, str]] = set()
    for m in matches:
        if m.status is Status.REJECTED:
            continue
        links = links_of(m)
        proposed |= links
        if m.status is not Status.SUGGESTED:
            auto |= links
        stage_links.setdefault(m.stage.value, set()).update(links)
    correct = proposed & expected
    by_stage = {
        stage: {"links": len(links), "share": round(_ratio(len(links), len(proposed)), 4),
                "precision": round(_ratio(len(links & expected), len(links)), 4)}
        for stage, links in sorted(stage_links.items())
    }
    kinds = kinds or {}
    misses = Counter(kinds.get(a, kinds.get(b, "plain")) for a, b in expected - proposed)
    false_links = Counter(kinds.get(a, kinds.get(b, "plain")) for a, b in proposed - expected)
    found = {(b.pairing, b.record_id): b.reason.value for b in breaks}
    return Quality(
        precision=_ratio(len(correct), len(proposed)), recall=_ratio(len(correct), len(expected)),
        proposed=len(proposed), expected=len(expected), correct=len(correct),
        auto_precision=_ratio(len(auto & expected), len(auto)), by_stage=by_stage,
        break_reasons_correct=sum(1 for k, reason in expected_breaks.items() if found.get(k) == reason),
        breaks_expected=len(expected_breaks), breaks_found=len(found), misses=misses, false_links=false_links,
    )
