"""Event-time windows: when a record may still find a partner, and when it becomes a break.

``Reconciler`` keeps the unmatched records of each pairing. Exact matches are taken as soon
as both sides are there. The looser stages (tolerance, fuzzy) wait until a record's window
closes (its value date plus ``window_days`` is behind the watermark, the newest value date
seen), so a late partner still gets its chance; whatever is unmatched then becomes a break.
Everything here is deterministic for a given order of records, and all state is plain
values (``state`` / ``restore``) that the agent persists sealed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from reconcile.cascade import (
    PairScorer,
    Pool,
    bucket_of,
    fingerprint,
    finish_fuzzy,
    fuzzy_pairs,
    mark_duplicates,
    match_exact,
    match_reversals,
    match_tolerance,
    new_pool,
)
from reconcile.config import MatchConfig
from reconcile.models import Break, BreakReason, Match, Record
from reconcile.text import name_score, norm_reference, reference_score

DEFAULT_PAIRINGS: tuple[tuple[str, str], ...] = (
    ("core-ledger", "payment-switch"), ("core-ledger", "bank-statement"),
)


def pairing_name(left: str, right: str) -> str:
    return f"{left}~{right}"


@dataclass
class StepResult:
    matches: list[Match] = field(default_factory=list)
    breaks: list[Break] = field(default_factory=list)

    def extend(self, other: StepResult) -> None:
        self.matches += other.matches
        self.breaks += other.breaks


def breaks_for(pool: Pool, closing: Iterable[Record], right_source: str, left_source: str,
               date_days: int = 4, cfg: MatchConfig | None = None) -> list[Break]:
    """Breaks for the unmatched ``closing`` records of ``pool``, each with its reason.

    A record whose reference matches an unmatched record of the other side differs in
    amount (both become breaks); a record seen twice is a duplicate; otherwise the other side
    never reported it.
    """
    out: list[Break] = []
    closing = list(closing)
    done: set[str] = set()
    for record in closing:
        if record.record_id in done:
            continue
        on_left = record.record_id in pool.left
        if not on_left and record.record_id not in pool.right:
            continue
        others = pool.right if on_left else pool.left
        ref = norm_reference(record.reference)
        partner = next((o for o in others.values() if ref and bucket_of(o) == bucket_of(record)
                        and reference_score(ref, norm_reference(o.reference)) >= 0.9), None)
        if partner is None:  # no usable reference: the same counterparty, near date and amount
            # (an amount within tolerance is no discrepancy: that record may be another's match)
            partner = next((o for o in others.values() if bucket_of(o) == bucket_of(record)
                            and (o.amount > 0) == (record.amount > 0)
                            and not (cfg or MatchConfig()).amounts_agree(o.amount, record.amount)
                            and abs(o.amount - record.amount) <= abs(record.amount) * Decimal("0.1")
                            and abs((o.value_date - record.value_date).days) <= date_days
                            and name_score(o.counterparty, record.counterparty) >= 0.8), None)
        if partner is not None:
            diff = partner.amount - record.amount
            for r, d in ((record, diff), (partner, -diff)):
                out.append(Break(pool.pairing, r.record_id, r.source, BreakReason.AMOUNT_DIFFERS,
                                 f"amount differs by {d:+}", r.amount, r.currency, (r is record and
                                 partner.record_id or record.record_id,)))
                done.add(r.record_id)
            del pool.left[(record if on_left else partner).record_id]
            del pool.right[(partner if on_left else record).record_id]
            continue
        missing_on = right_source if on_left else left_source
        out.append(Break(pool.pairing, record.record_id, record.source, BreakReason.MISSING,
                         f"missing on {missing_on}", record.amount, record.currency))
        del (pool.left if on_left else pool.right)[record.record_id]
        done.add(record.record_id)
    return out


class Reconciler:
    """The streaming matcher over several pairings (ledger~switch, ledger~statement)."""

    def __init__(self, cfg: MatchConfig, pairings: Sequence[tuple[str, str]] = DEFAULT_PAIRINGS,
                 similarity: PairScorer | None = None, fuzzy: bool = True) -> None:
        self.cfg = cfg
        self.pairings = tuple(pairings)
        self.similarity = similarity
        self.fuzzy = fuzzy
        self.pools = {pairing_name(*p): new_pool(pairing_name(*p), [], []) for p in self.pairings}
        self.known: dict[str, dict[str, tuple[str, date]]] = {k: {} for k in self.pools}
        self.watermark: date | None = None
        #: The watermark of the last step (with several partitions, behind ``watermark``):
        #: what is older than it by two windows is forgotten.
        self.closed_through: date | None = None
        #: Every record taken in, by id, until it is older than the horizon: a record
        #: delivered again (a worker restart) is recognised and not matched twice.
        self.seen: dict[str, date] = {}

    # -- input -------------------------------------------------------------------------------

    def forgotten(self, records: Iterable[Record]) -> list[Record]:
        """Records older than the matcher remembers ids for, and not among those it does: a
        redelivery of old records or a very late one. The caller checks them against what is
        stored before adding them."""
        span = timedelta(days=2 * self.cfg.window_days)
        if self.closed_through is None or self.closed_through <= date.min + span:
            return []
        horizon = self.closed_through - span
        return [r for r in records if r.record_id not in self.seen and r.value_date < horizon]

    def add(self, records: Iterable[Record]) -> None:
        """Route each record to every pairing its source takes part in (redeliveries ignored)."""
        for record in records:
            if record.record_id in self.seen:
                continue
            self.seen[record.record_id] = record.value_date
            for left, right in self.pairings:
                pool = self.pools[pairing_name(left, right)]
                side = pool.left if record.source == left else pool.right if record.source == right else None
                if side is not None and record.record_id not in side:
                    side[record.record_id] = record
            if self.watermark is None or record.value_date > self.watermark:
                self.watermark = record.value_date

    # -- matching ----------------------------------------------------------------------------

    def _closed(self, record: Record, watermark: date) -> bool:
        return record.value_date + timedelta(days=self.cfg.window_days) < watermark

    def step(self, watermark: date | None = None) -> StepResult:
        """Match what can be matched now; records whose window closed are matched or broken."""
        watermark = watermark or self.watermark
        if watermark is not None and (self.closed_through is None or watermark > self.closed_through):
            self.closed_through = watermark
        result = StepResult()
        for (left, right), (name, pool) in zip(self.pairings, self.pools.items(), strict=True):
            before = len(pool.matches)
            snapshot = {**pool.left, **pool.right}
            known = {fp: rid for fp, (rid, _) in self.known[name].items()}
            mark_duplicates(pool, known)
            match_reversals(pool)
            match_exact(pool)
            if watermark is not None and any(self._closed(r, watermark)
                                             for r in [*pool.left.values(), *pool.right.values()]):
                # Looser stages decide only matches that hold a record whose window closed:
                # by then every partner it could have has arrived (the window is longer than
                # the date tolerance plus lateness), so what they decide does not depend on
                # how the stream was cut into batches. They see every pending record of the
                # bucket (for uniqueness and runners-up); a pair of open records is set aside
                # for this step instead of matched.
                closing_buckets = {bucket_of(r) for r in [*pool.left.values(), *pool.right.values()]
                                   if self._closed(r, watermark)}
                sub = new_pool(name, [r for r in pool.left.values() if bucket_of(r) in closing_buckets],
                               [r for r in pool.right.values() if bucket_of(r) in closing_buckets])
                sub.allow = lambda records, wm=watermark: any(self._closed(r, wm) for r in records)
                self._loose_stages(sub)
                for m in sub.matches:
                    for rid in m.left_ids:
                        pool.left.pop(rid, None)
                    for rid in m.right_ids:
                        pool.right.pop(rid, None)
                pool.matches += sub.matches
                closing = [r for r in [*pool.left.values(), *pool.right.values()]
                           if self._closed(r, watermark)]
                result.breaks += breaks_for(pool, closing, right, left, self.cfg.date_days, self.cfg)
            new = pool.matches[before:]
            result.matches += new
            self._remember(name, snapshot, new)
            result.breaks += self._duplicate_breaks(pool, snapshot)
            pool.matches.clear()
        return result

    def flush(self) -> StepResult:
        """Close every window now (end of a run): all that is unmatched becomes a break."""
        far = (self.watermark or date.today()) + timedelta(days=self.cfg.window_days + 1)
        return self.step(far)

    def _loose_stages(self, pool: Pool) -> None:
        match_tolerance(pool, self.cfg)
        if self.fuzzy:
            candidates = fuzzy_pairs(pool, self.cfg)
            scores = (self.similarity([c.texts() for c in candidates])
                      if self.similarity and candidates else None)
            finish_fuzzy(pool, self.cfg, candidates, scores)

    def _remember(self, name: str, records: dict[str, Record], matches: list[Match]) -> None:
        """Fingerprints of matched records, so a copy arriving later is seen as a duplicate."""
        known = self.known[name]
        span = timedelta(days=2 * self.cfg.window_days)
        closed = self.closed_through
        horizon = closed - span if closed is not None and closed > date.min + span else date.min
        for fp, (_rid, day) in list(known.items()):
            if day < horizon:
                del known[fp]
        for rid, day in list(self.seen.items()):
            if day < horizon:
                del self.seen[rid]
        for m in matches:
            for rid in (*m.left_ids, *m.right_ids):
                record = records.get(rid)
                if record is not None:
                    known[fingerprint(record)] = (rid, record.value_date)

    def _duplicate_breaks(self, pool: Pool, records: dict[str, Record]) -> list[Break]:
        out = []
        for rid, original in pool.duplicates.items():
            r = records[rid]
            out.append(Break(pool.pairing, rid, r.source, BreakReason.DUPLICATE,
                             "duplicate of an earlier record", r.amount, r.currency, (original,)))
        pool.duplicates.clear()
        return out

    # -- persistence -------------------------------------------------------------------------

    def pending(self) -> dict[str, Record]:
        """Every unmatched record by id (one record may wait in two pairings)."""
        out: dict[str, Record] = {}
        for pool in self.pools.values():
            out.update(pool.left)
            out.update(pool.right)
        return out

    def state(self) -> dict[str, Any]:
        """Everything needed to resume: pending records, known fingerprints, the watermark."""
        return {
            "watermark": self.watermark.isoformat() if self.watermark else None,
            "closed_through": self.closed_through.isoformat() if self.closed_through else None,
            "pools": {name: {"left": [r.to_dict() for r in p.left.values()],
                             "right": [r.to_dict() for r in p.right.values()]}
                      for name, p in self.pools.items()},
            "known": {name: [[fp, rid, day.isoformat()] for fp, (rid, day) in k.items()]
                      for name, k in self.known.items()},
            "seen": [[rid, day.isoformat()] for rid, day in self.seen.items()],
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.watermark = date.fromisoformat(state["watermark"]) if state.get("watermark") else None
        closed = state.get("closed_through")
        self.closed_through = date.fromisoformat(closed) if closed else None
        for name, sides in state.get("pools", {}).items():
            if name in self.pools:
                pool = self.pools[name]
                pool.left = {d["record_id"]: Record.from_dict(d) for d in sides["left"]}
                pool.right = {d["record_id"]: Record.from_dict(d) for d in sides["right"]}
        self.seen = {rid: date.fromisoformat(day) for rid, day in state.get("seen", [])}
        for name, rows in state.get("known", {}).items():
            if name in self.known:
                self.known[name] = {fp: (rid, date.fromisoformat(day))
                                    for fp, rid, day in rows}

