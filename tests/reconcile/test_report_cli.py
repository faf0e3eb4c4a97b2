"""The report (pure) and `attest recon report/confirm/reject` against the real stack."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from config.settings import Settings
from reconcile.report import build_report, flat_rows, write_chart
from schemas.audit import records_in
from storage.reconciliation import BreakRow, MatchRow, get_match, save_step
from streams.admin import ensure_topics
from streams.topics import AUDIT
from tests.support.topics import read_topic
from tests.support.workers import settings_env

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _ids(n: int) -> tuple[str, ...]:
    return tuple(str(uuid.uuid4()) for _ in range(n))


def _match(stage: str, status: str, left: tuple[str, ...], right: tuple[str, ...], at: datetime = NOW):
    return MatchRow(str(uuid.uuid4()), "core-ledger~bank-statement", stage, "rule", 0.9,
                    "1:1", status, left, right, "EUR", None, at)


def test_report_counts_and_quality():
    l1, r1, l2, r2, l3 = _ids(5)
    matches = [_match("exact", "matched", (l1,), (r1,)), _match("fuzzy", "suggested", (l2,), (r2,))]
    breaks = [BreakRow(str(uuid.uuid4()), "core-ledger~bank-statement", l3, "core-ledger", "missing",
                       "EUR", opened_at=NOW - timedelta(days=3)),
              BreakRow(str(uuid.uuid4()), "tax-bureau~social-security-bureau", l3, "tax-bureau",
                       "income_without_insurance", opened_at=NOW)]
    truth = {"pairings": {"core-ledger~bank-statement": {"links": [[l1, r1], [l2, r1]],
                                                         "breaks": [{"id": l3, "reason": "missing"}]}}}
    report = build_report(matches, breaks, NOW, {breaks[0].break_id: Decimal("-12.50")}, truth)
    assert report["matches"]["by_stage"] == {"exact": {"matched": 1}, "fuzzy": {"suggested": 1}}
    assert [s["match_id"] for s in report["suggested_awaiting_decision"]] == [matches[1].match_id]
    assert report["breaks"]["ageing"] == {"< 1 day": 1, "1-7 days": 1, "> 7 days": 0}
    assert report["breaks"]["by_reason"] == {"missing": 1, "income_without_insurance": 1}
    assert report["amounts_at_risk"] == {"EUR": "12.50"}
    assert report["quality"]["precision"] == 0.5 and report["quality"]["recall"] == 0.5
    assert ("breaks by reason", "missing", "1") in flat_rows(report)
    assert build_report(matches, breaks, NOW)["amounts_at_risk"].startswith("sealed")


def test_chart_is_a_png(tmp_path: Path):
    report = build_report([_match("exact", "matched", *[_ids(1)] * 2)], [], NOW)
    write_chart(report, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def attest(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.integration
def test_confirm_and_reject_are_audited_and_guarded(stack_settings: Settings, tmp_path: Path):
    ensure_topics(stack_settings)
    url = stack_settings.database_url
    suggested = _match("fuzzy", "suggested", *[_ids(1)] * 2)
    automatic = _match("exact", "matched", _ids(1), _ids(2))
    save_step(url, f"test-{uuid.uuid4().hex[:6]}", b"x", 1, [suggested, automatic], [])

    done = attest(stack_settings, "recon", "confirm", suggested.match_id, "--reason", "same invoice")
    assert done.returncode == 0, done.stderr
    assert get_match(url, suggested.match_id).status == "confirmed"
    again = attest(stack_settings, "recon", "reject", suggested.match_id, "--reason", "changed my mind")
    assert again.returncode != 0 and "is confirmed" in again.stderr and "Traceback" not in again.stderr
    assert attest(stack_settings, "recon", "reject", automatic.match_id, "--reason", "wrong").returncode == 0
    assert get_match(url, automatic.match_id).status == "rejected"
    assert attest(stack_settings, "recon", "confirm", "nonsense", "--reason", "x").returncode != 0

    records = [r.model_dump(mode="json") for m in read_topic(stack_settings, AUDIT.name(stack_settings))
               for r in records_in(m.value())]
    ours = {suggested.match_id, automatic.match_id}
    mine = {r["action"]: r for r in records if r["correlation_id"] in ours}
    assert mine["recon.confirmed"]["detail"]["reason"] == "same invoice"
    assert mine["recon.rejected"]["actor"].startswith("operator:")

    shown = attest(stack_settings, "recon", "report", "--format", "json", "--chart", str(tmp_path / "c.png"))
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout[: shown.stdout.rindex("}") + 1])
    assert body["matches"]["by_stage"]["fuzzy"]["confirmed"] >= 1
    assert (tmp_path / "c.png").exists()
    csv_out = attest(stack_settings, "recon", "report", "--format", "csv", "--since", "1h")
    assert csv_out.returncode == 0 and csv_out.stdout.startswith("section,item,value")
