"""The reliability table is generated from the recorded rows, never typed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.reliability_report import END, START, render, update


def _row(fault: str, **kw: object) -> dict[str, object]:
    row = {"fault": fault, "sent": 10, "expected_stored": 8, "expected_rejected": 2, "stored": 8,
           "dead_lettered": 2, "lost": 0, "lost_upstream": 0, "duplicated": 0, "unaudited": 0,
           "raw_dead_letters": 3, "raw_dead_letter_duplicates": 1, "recovery_s": 4.0,
           "note": "a note", "at": "2026-12-01T01:02:03+00:00"}
    return {**row, **kw}


def test_rows_render_in_the_issue_order_with_upstream_loss_shown(tmp_path: Path) -> None:
    rows = {"Postgres fast shutdown": _row("Postgres fast shutdown"),
            "worker SIGKILL x3": _row("worker SIGKILL x3"),
            "broker killed and restarted (memory broker)":
                _row("broker killed and restarted (memory broker)", lost_upstream=7)}
    (tmp_path / "faults.json").write_text(json.dumps(rows))
    table = render(tmp_path)
    lines = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert [line.split(" | ")[0] for line in lines[1:]] == [
        "| worker SIGKILL x3", "| Postgres fast shutdown", "| broker killed and restarted (memory broker)"]
    assert "| 0 (+7 upstream) |" in table
    assert "| 8/8 | 2/2 | 0 | 0 | 0 | 1 | 4.0 s |" in lines[1]
    assert "No soak run recorded yet" in table


def test_update_replaces_only_the_generated_block(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{START}\nold table\n{END}\nafter\n")
    update(doc, "new table")
    assert doc.read_text() == f"before\n{START}\nnew table\n{END}\nafter\n"
    bare = tmp_path / "bare.md"
    bare.write_text("no markers")
    with pytest.raises(SystemExit):
        update(bare, "x")


def test_the_soak_row_shows_the_rate_sent_and_each_stages_growth(tmp_path: Path) -> None:
    soak = {"at": "2026-12-02T03:45:00+00:00", "duration_s": 600, "rate": 198, "achieved_rate": 85.2,
            "sent": 100, "mix": {"finance": 70, "government": 20, "hostile": 10},
            "expected_stored": 90, "stored": 90, "expected_rejected": 10, "dead_lettered": 10,
            "lost": 0, "duplicated": 0, "raw_dead_letter_duplicates": 0,
            "rss_mb": {"start": 900, "minute_2": 1000, "end": 1100}, "rss_growth_pct": 10.0,
            "stage_rss_mb": {"minute_2": {"intake": 200, "reconciliation": 800},
                             "end": {"intake": 210, "reconciliation": 890}},
            "lag_at_end": 3, "drain_s": 0.5, "log_errors": 0, "audit_verify": "intact"}
    (tmp_path / "soak.json").write_text(json.dumps(soak))
    table = render(tmp_path)
    assert "| 600 s at 198 msgs/s (sent at 85 msgs/s) |" in table
    assert "intake 200 -> 210 (+5.0%); reconciliation 800 -> 890 (+11.2%)" in table


def test_the_soak_row_shows_total_rss_at_each_whole_minute(tmp_path: Path) -> None:
    series = [{"t": t, "intake": 100 + t, "enrichment": 500} for t in (0, 29, 61, 90, 118, 150)]
    soak = {"at": "2026-12-02T03:45:00+00:00", "duration_s": 150, "rate": 10, "sent": 10,
            "mix": {"finance": 7, "government": 2, "hostile": 1}, "expected_stored": 9, "stored": 9,
            "expected_rejected": 1, "dead_lettered": 1, "lost": 0, "duplicated": 0,
            "raw_dead_letter_duplicates": 0, "rss_mb": {"start": 600, "minute_2": 718, "end": 750},
            "rss_growth_pct": 4.5, "rss_series": series, "lag_at_end": 0, "drain_s": 0.1,
            "log_errors": 0, "audit_verify": "intact"}
    (tmp_path / "soak.json").write_text(json.dumps(soak))
    assert "| worker RSS by minute (MB) | 0: 600, 1: 661, 2: 718 |" in render(tmp_path)
