"""What an analyst reads: matched by stage, suggestions awaiting a decision, breaks by reason
and source, amounts at risk, ageing of open breaks, and (given the truth) precision and recall.

Pure: it takes stored rows (anything with the ``MatchRow`` / ``BreakRow`` attributes) and
returns plain values, so the CLI only prints and the tests need no database.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from reconcile.models import Break, BreakReason, Match, Stage, Status
from reconcile.quality import score

AGEING = ((timedelta(days=1), "< 1 day"), (timedelta(days=7), "1-7 days"), (timedelta.max, "> 7 days"))


def as_match(row: Any) -> Match:
    return Match(pairing=row.pairing, stage=Stage(row.stage), rule=row.rule, score=row.score,
                 status=Status(row.status), left_ids=tuple(row.left_ids), right_ids=tuple(row.right_ids),
                 match_id=row.match_id)


def as_break(row: Any) -> Break:
    return Break(pairing=row.pairing, record_id=row.record_id, source=row.source,
                 reason=BreakReason(row.reason), detail="", related_ids=tuple(row.related_ids))


def _age_bucket(age: timedelta) -> str:
    return next(label for limit, label in AGEING if age < limit)


def build_report(matches: Sequence[Any], breaks: Sequence[Any], now: datetime,
                 amounts: Mapping[str, Decimal] | None = None,
                 truth: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The report as plain values (JSON-ready). ``amounts``: break id -> amount, when readable."""
    by_stage: dict[str, Counter[str]] = defaultdict(Counter)
    for m in matches:
        by_stage[m.stage][m.status] += 1
    rejected_ids = {i for m in matches if m.status == Status.REJECTED for i in (*m.left_ids, *m.right_ids)}
    suggested = [
        {"match_id": m.match_id, "pairing": m.pairing, "stage": m.stage, "rule": m.rule,
         "score": round(m.score, 3), "kind": m.kind}
        for m in matches if m.status == Status.SUGGESTED
    ]
    reasons: Counter[str] = Counter()
    per_source: Counter[str] = Counter()
    at_risk: dict[str, Decimal] = defaultdict(Decimal)
    ageing: Counter[str] = Counter()
    for b in breaks:
        reasons[b.reason] += 1
        per_source[f"{b.source} ({b.reason})"] += 1
        if b.opened_at is not None:
            ageing[_age_bucket(now - b.opened_at)] += 1
        if amounts is not None and b.break_id in amounts and b.reason != BreakReason.DUPLICATE:
            at_risk[b.currency or "?"] += abs(amounts[b.break_id])
    timeline = _timeline(matches, breaks)
    report: dict[str, Any] = {
        "generated_at": now.isoformat(timespec="seconds"),
        "matches": {"total": len(matches),
                    "by_stage": {stage: dict(counts) for stage, counts in sorted(by_stage.items())}},
        "suggested_awaiting_decision": suggested,
        "rejected_records": len(rejected_ids),
        "breaks": {"total": len(breaks), "by_reason": dict(reasons.most_common()),
                   "by_source": dict(per_source.most_common()),
                   "ageing": {label: ageing[label] for _, label in AGEING}},
        "amounts_at_risk": ({c: str(v) for c, v in sorted(at_risk.items())} if amounts is not None
                            else "sealed (the worker keyring is needed to read amounts)"),
        "timeline": timeline,
    }
    if truth is not None:
        finance = [b for b in breaks if b.reason in {r.value for r in BreakReason}]  # not agency rules
        report["quality"] = score([as_match(m) for m in matches], [as_break(b) for b in finance],
                                  truth).as_dict()
    return report


def _timeline(matches: Sequence[Any], breaks: Sequence[Any]) -> list[dict[str, Any]]:
    """Matches and breaks per minute of processing time: the match rate over time."""
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for m in matches:
        if m.matched_at is not None:
            per[m.matched_at.strftime("%Y-%m-%dT%H:%M")][0] += 1
    for b in breaks:
        if b.opened_at is not None:
            per[b.opened_at.strftime("%Y-%m-%dT%H:%M")][1] += 1
    return [{"minute": k, "matches": v[0], "breaks": v[1],
             "match_rate": round(v[0] / (v[0] + v[1]), 4) if v[0] + v[1] else 1.0}
            for k, v in sorted(per.items())]


def flat_rows(report: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(section, item, value) rows for the table and CSV formats."""
    rows: list[tuple[str, str, str]] = []
    for stage, counts in report["matches"]["by_stage"].items():
        for status, n in counts.items():
            rows.append(("matched by stage", f"{stage} ({status})", str(n)))
    rows.append(("suggested", "awaiting decision", str(len(report["suggested_awaiting_decision"]))))
    for reason, n in report["breaks"]["by_reason"].items():
        rows.append(("breaks by reason", reason, str(n)))
    for source, n in report["breaks"]["by_source"].items():
        rows.append(("breaks by source", source, str(n)))
    for label, n in report["breaks"]["ageing"].items():
        rows.append(("ageing of open breaks", label, str(n)))
    risk = report["amounts_at_risk"]
    if isinstance(risk, dict):
        rows += [("amounts at risk", currency, amount) for currency, amount in risk.items()]
    else:
        rows.append(("amounts at risk", "-", risk))
    quality = report.get("quality")
    if quality:
        rows += [("quality", "precision", f"{quality['precision']:.4f}"),
                 ("quality", "recall", f"{quality['recall']:.4f}"),
                 ("quality", "precision of automatic matches", f"{quality['auto_precision']:.4f}")]
        for stage, s in quality["by_stage"].items():
            rows.append(("quality", f"{stage}: share / precision",
                         f"{s['share']:.4f} / {s['precision']:.4f}"))
    return rows


def write_chart(report: Mapping[str, Any], path: Path) -> None:
    """A PNG with two panels: breaks by reason, and the match rate over time."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    reasons = report["breaks"]["by_reason"]
    left.bar(list(reasons) or ["none"], list(reasons.values()) or [0], color="#c0504d")
    left.set_title("Breaks by reason")
    left.set_ylabel("breaks")
    timeline = report["timeline"]
    right.plot([t["minute"][11:] for t in timeline], [t["match_rate"] for t in timeline], marker="o")
    right.set_ylim(0, 1.05)
    right.set_title("Match rate over time (per minute)")
    right.set_ylabel("matches / (matches + breaks)")
    right.tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
