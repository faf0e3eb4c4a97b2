"""The matching cascade: exact, then tolerance, then fuzzy, over 1:1, 1:N, N:1 and N:M groups.

``run_cascade`` takes the unmatched records of two sources (``left``, ``right``) and returns
the matches it is sure of (``matched``), the ones it proposes (``suggested``) and what is
left. Each stage only sees what earlier, cheaper and surer stages left over, and every
match names its stage, its rule and its score. Records are compared only within one
bucket: the same account (by blind index) and currency.

The fuzzy stage needs text similarity. String distance (rapidfuzz) is built in; the model's
similarity is a ``PairScorer`` passed in by the caller (a plain function, so tests can give
a stub and the agent gives the model pool). ``fuzzy_pairs`` and ``finish_fuzzy`` split the
stage in two for callers whose scorer is asynchronous.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import combinations

from reconcile.config import MatchConfig
from reconcile.models import Match, Record, Stage, Status
from reconcile.text import mentions, name_score, norm_reference, reference_score, text_score

PairScorer = Callable[[Sequence[tuple[str, str]]], Sequence[float]]
"""Similarity in [0, 1] of each (left text, right text) pair; the model's share of fuzzy."""

Bucket = tuple[str, str]


def bucket_of(record: Record) -> Bucket:
    return (record.account_key, record.currency)


def fingerprint(record: Record) -> str:
    """What two records must share to be the same record sent twice (a duplicate), hashed:
    kept only inside the sealed state, and compact there."""
    parts = (record.source, record.account_key, record.currency, norm_reference(record.reference),
             str(record.amount), record.value_date.isoformat(), record.counterparty.upper(),
             record.memo.upper())
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def describe(record: Record) -> str:
    """Counterparty and remittance text, for the model when a record has no remittance text."""
    return f"{record.counterparty} {record.memo}".strip()


@dataclass
class Pool:
    """The unmatched records of one pairing, and what the cascade has decided so far."""

    pairing: str
    left: dict[str, Record]
    right: dict[str, Record]
    matches: list[Match] = field(default_factory=list)
    duplicates: dict[str, str] = field(default_factory=dict)
    #: When set, a match is only taken if ``allow(its records)``; otherwise its records are
    #: set aside (left out of this pool) without a match. Windows use it (reconcile.windows).
    allow: Callable[[list[Record]], bool] | None = None

    def take(self, stage: Stage, rule: str, score: float, status: Status,
             left: Iterable[Record], right: Iterable[Record]) -> Match | None:
        left, right = list(left), list(right)
        for r in left:
            del self.left[r.record_id]
        for r in right:
            del self.right[r.record_id]
        if self.allow is not None and not self.allow([*left, *right]):
            return None
        match = Match(
            pairing=self.pairing, stage=stage, rule=rule, score=round(score, 4), status=status,
            left_ids=tuple(r.record_id for r in left), right_ids=tuple(r.record_id for r in right),
            difference=sum((r.amount for r in right), Decimal(0)) - sum((r.amount for r in left), Decimal(0)),
            currency=(left or right)[0].currency,
        )
        self.matches.append(match)
        return match

    def buckets(self) -> dict[Bucket, tuple[list[Record], list[Record]]]:
        out: dict[Bucket, tuple[list[Record], list[Record]]] = defaultdict(lambda: ([], []))
        for r in self.left.values():
            out[bucket_of(r)][0].append(r)
        for r in self.right.values():
            out[bucket_of(r)][1].append(r)
        return out


def _near(cfg: MatchConfig, a: Record, b: Record) -> bool:
    return abs((a.value_date - b.value_date).days) <= cfg.date_days


# -- duplicates and reversals -------------------------------------------------------------------


def mark_duplicates(pool: Pool, known: dict[str, str] | None = None) -> None:
    """Set aside a record identical to an earlier one of the same source (first one wins).

    ``known`` maps fingerprints of records already matched earlier (streaming) to their id.
    """
    seen = dict(known or {})
    for side in (pool.left, pool.right):
        for record in list(side.values()):
            fp = fingerprint(record)
            original = seen.get(fp)
            if original is not None and original != record.record_id:
                pool.duplicates[record.record_id] = original
                del side[record.record_id]
            else:
                seen[fp] = record.record_id


def match_reversals(pool: Pool) -> None:
    """A payment and its reversal on the same side: ``REV <ref>``, opposite amount, same bucket."""
    for side_name in ("left", "right"):
        side = getattr(pool, side_name)
        by_ref: dict[tuple[Bucket, str, Decimal], Record] = {}
        for r in side.values():
            by_ref.setdefault((bucket_of(r), norm_reference(r.reference), r.amount), r)
        for r in list(side.values()):
            ref = norm_reference(r.reference)
            if r.record_id not in side or not ref.startswith("REV") or len(ref) <= 3:
                continue
            original = by_ref.get((bucket_of(r), ref[3:], -r.amount))
            if original is None or original.record_id not in side:
                continue
            pair = [original, r]
            pool.take(Stage.REVERSAL, "reversal of reference", 1.0, Status.MATCHED,
                      pair if side_name == "left" else [], pair if side_name == "right" else [])


# -- exact ------------------------------------------------------------------------------------


def match_exact(pool: Pool) -> None:
    """Same bucket, same normalized reference, same amount (1:1); then same reference, same
    total (1:N, N:1, N:M: a split payment shares its reference)."""
    index: dict[tuple[Bucket, str, Decimal], list[Record]] = defaultdict(list)
    for r in pool.right.values():
        ref = norm_reference(r.reference)
        if ref:
            index[(bucket_of(r), ref, r.amount)].append(r)
    for left in list(pool.left.values()):
        ref = norm_reference(left.reference)
        candidates = [r for r in index.get((bucket_of(left), ref, left.amount), ())
                      if r.record_id in pool.right] if ref else []
        if candidates:
            pool.take(Stage.EXACT, "reference+amount+currency", 1.0, Status.MATCHED, [left], [candidates[0]])
    _match_reference_groups(pool, exact=True)


def _match_reference_groups(pool: Pool, exact: bool, cfg: MatchConfig | None = None) -> None:
    groups: dict[tuple[Bucket, str], tuple[list[Record], list[Record]]] = defaultdict(lambda: ([], []))
    for r in pool.left.values():
        if ref := norm_reference(r.reference):
            groups[(bucket_of(r), ref)][0].append(r)
    for r in pool.right.values():
        if ref := norm_reference(r.reference):
            groups[(bucket_of(r), ref)][1].append(r)
    for lefts, rights in groups.values():
        if not lefts or not rights or (len(lefts) == 1 and len(rights) == 1 and exact):
            continue
        total_l = sum((r.amount for r in lefts), Decimal(0))
        total_r = sum((r.amount for r in rights), Decimal(0))
        if exact and total_l == total_r:
            pool.take(Stage.EXACT, "reference group, equal total", 1.0, Status.MATCHED, lefts, rights)
        elif not exact and cfg is not None and cfg.amounts_agree(total_l, total_r):
            rule = ("same reference, amount within tolerance" if len(lefts) == len(rights) == 1
                    else "reference group, total within tolerance")
            pool.take(Stage.TOLERANCE, rule, 0.95, Status.MATCHED, lefts, rights)


# -- tolerance --------------------------------------------------------------------------------


def _contradicts(a: Record, b: Record) -> bool:
    """Both carry a reference, and they are too different to be one typo or a truncation."""
    ra, rb = norm_reference(a.reference), norm_reference(b.reference)
    return bool(ra and rb) and reference_score(ra, rb) < 0.75


def match_tolerance(pool: Pool, cfg: MatchConfig) -> None:
    """Amount within tolerance and value dates within the date window, then one of:
    compatible references (truncated), the same reference group within tolerance, a
    remittance text listing the other side's references (a batch), the only candidate each
    way (unique amount and date), or a bounded subset-sum of one counterparty's records."""
    _match_reference_groups(pool, exact=False, cfg=cfg)
    _match_listed_references(pool, cfg)
    for lefts, rights in pool.buckets().values():
        cands = {
            lt.record_id: [r for r in rights if cfg.amounts_agree(lt.amount, r.amount) and _near(cfg, lt, r)]
            for lt in lefts
        }
        back: dict[str, list[str]] = defaultdict(list)
        for lid, rs in cands.items():
            for r in rs:
                back[r.record_id].append(lid)
        for lt in lefts:
            rs = [r for r in cands[lt.record_id] if r.record_id in pool.right]
            if lt.record_id not in pool.left or not rs:
                continue
            prefixed = [r for r in rs if norm_reference(r.reference) and reference_score(
                norm_reference(lt.reference), norm_reference(r.reference)) == 1.0]
            if len(prefixed) == 1:
                pool.take(Stage.TOLERANCE, "reference prefix, amount and date within tolerance", 0.95,
                          Status.MATCHED, [lt], prefixed)
                continue
            if len(rs) == 1 and len(back[rs[0].record_id]) == 1 and not _contradicts(lt, rs[0]) \
                    and name_score(lt.counterparty, rs[0].counterparty) >= 0.6:
                pool.take(Stage.TOLERANCE, "only candidate by amount and date", 0.85,
                          Status.MATCHED, [lt], rs)
    _match_subset_sums(pool, cfg)


def _match_listed_references(pool: Pool, cfg: MatchConfig) -> None:
    by_bucket_ref: dict[tuple[Bucket, str], Record] = {}
    for r in pool.left.values():
        if ref := norm_reference(r.reference):
            by_bucket_ref.setdefault((bucket_of(r), ref), r)
    for right in list(pool.right.values()):
        tokens = {norm_reference(t) for t in right.memo.split()}
        listed = [by_bucket_ref[(bucket_of(right), t)] for t in tokens
                  if t and (bucket_of(right), t) in by_bucket_ref]
        listed = [r for r in listed
                  if r.record_id in pool.left and mentions(right.memo, norm_reference(r.reference))]
        if len(listed) < 2:
            continue
        total = sum((r.amount for r in listed), Decimal(0))
        if total == right.amount:
            pool.take(Stage.EXACT, "remittance lists references, equal total", 1.0, Status.MATCHED,
                      listed, [right])
        elif cfg.amounts_agree(total, right.amount):
            pool.take(Stage.TOLERANCE, "remittance lists references, total within tolerance", 0.95,
                      Status.MATCHED, listed, [right])


def _subset(target: Decimal, items: list[Record], cfg: MatchConfig) -> list[list[Record]]:
    """Every subset of 2..max_group items whose total agrees with ``target`` (at most two kept)."""
    found: list[list[Record]] = []
    for size in range(2, min(cfg.max_group, len(items)) + 1):
        for combo in combinations(items, size):
            if cfg.amounts_agree(sum((r.amount for r in combo), Decimal(0)), target):
                found.append(list(combo))
                if len(found) > 1:
                    return found
    return found


def _match_subset_sums(pool: Pool, cfg: MatchConfig) -> None:
    """One record against several of the other side: same counterparty, same sign, near dates.

    Unique solutions match; an ambiguous one is suggested with its first subset."""
    for one_side, many_side, one_is_left in ((pool.right, pool.left, False), (pool.left, pool.right, True)):
        for one in sorted(one_side.values(), key=lambda r: -abs(r.amount)):
            if one.record_id not in one_side:
                continue
            items = [
                r for r in many_side.values()
                if bucket_of(r) == bucket_of(one) and (r.amount > 0) == (one.amount > 0)
                and abs(r.amount) < abs(one.amount) and _near(cfg, r, one)
                and name_score(r.counterparty, one.counterparty) >= 0.75
            ]
            items.sort(key=lambda r: abs((r.value_date - one.value_date).days))
            items = items[: cfg.max_candidates]
            found = _subset(one.amount, items, cfg)
            if not found:
                continue
            status, score = (Status.MATCHED, 0.85) if len(found) == 1 else (Status.SUGGESTED, 0.6)
            group = found[0]
            lefts, rights = (([one], group) if one_is_left else (group, [one]))
            pool.take(Stage.TOLERANCE, "subset-sum of one counterparty", score, status, lefts, rights)


# -- fuzzy ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    left: Record
    right: Record
    string_score: float

    def texts(self) -> tuple[str, str]:
        """What the model compares: the remittance texts (names are string distance's job,
        and a shared name would drown the purpose in the embedding)."""
        if self.left.memo and self.right.memo:
            return (self.left.memo, self.right.memo)
        return (describe(self.left), describe(self.right))


def fuzzy_pairs(pool: Pool, cfg: MatchConfig) -> list[Candidate]:
    """Every left/right pair of a bucket that agrees on amount and date: what fuzzy scores."""
    out = []
    for lefts, rights in pool.buckets().values():
        for lt in lefts:
            for r in rights:
                if not (cfg.amounts_agree(lt.amount, r.amount) and _near(cfg, lt, r)):
                    continue
                ra, rb = norm_reference(lt.reference), norm_reference(r.reference)
                names = name_score(lt.counterparty, r.counterparty)
                memo = text_score(lt.memo, r.memo)
                if ra and rb:
                    score = 0.5 * reference_score(ra, rb) + 0.25 * names + 0.25 * memo
                else:
                    score = 0.9 * (0.5 * names + 0.5 * memo)
                out.append(Candidate(lt, r, score))
    return out


def _second(scores: list[float]) -> float:
    return sorted(scores)[-2] if len(scores) > 1 else 0.0


def finish_fuzzy(pool: Pool, cfg: MatchConfig, candidates: list[Candidate],
                 model_scores: Sequence[float] | None = None) -> None:
    """Assign the best pairs, one to one. With model scores, the text part is the mean of
    string distance and model similarity. A pair whose runner-up is nearly as good is only
    suggested."""
    scored = []
    for i, c in enumerate(candidates):
        score = c.string_score
        if model_scores is not None:
            score = 0.5 * score + 0.5 * max(0.0, min(1.0, float(model_scores[i])))
        scored.append((score, c))
    best_other: dict[str, list[float]] = defaultdict(list)
    for score, c in scored:
        best_other[c.left.record_id].append(score)
        best_other[c.right.record_id].append(score)
    scored.sort(key=lambda item: (-item[0], item[1].left.record_id, item[1].right.record_id))
    for score, c in scored:
        if score < cfg.suggest or c.left.record_id not in pool.left or c.right.record_id not in pool.right:
            continue
        runner_up = max(_second(best_other[c.left.record_id]), _second(best_other[c.right.record_id]))
        clear = score - runner_up >= 0.05
        status = Status.MATCHED if score >= cfg.accept and clear else Status.SUGGESTED
        rule = "text similarity" + ("" if clear else ", close runner-up")
        pool.take(Stage.FUZZY, rule, score, status, [c.left], [c.right])


# -- the whole cascade ------------------------------------------------------------------------


def run_cascade(
    pool: Pool, cfg: MatchConfig, similarity: PairScorer | None = None, *,
    fuzzy: bool = True, known: dict[str, str] | None = None,
) -> Pool:
    """Run every stage over ``pool`` in order, in place; returns the pool for chaining."""
    mark_duplicates(pool, known)
    match_reversals(pool)
    match_exact(pool)
    match_tolerance(pool, cfg)
    if fuzzy:
        candidates = fuzzy_pairs(pool, cfg)
        scores = similarity([c.texts() for c in candidates]) if (similarity and candidates) else None
        finish_fuzzy(pool, cfg, candidates, scores)
    return pool


def new_pool(pairing: str, left: Iterable[Record], right: Iterable[Record]) -> Pool:
    return Pool(pairing, {r.record_id: r for r in left}, {r.record_id: r for r in right})
