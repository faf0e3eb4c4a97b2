"""`attest bench e2e` on the session's stack: it counts what it stored, never a timer's guess."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.e2e import markdown_table, min_backlog, run_backlog, run_load, write_chart
from config.settings import Settings

pytestmark = pytest.mark.integration


def test_backlog_and_load_runs_store_everything_they_send_and_report_it(
    stack_settings: Settings, tmp_path: Path
) -> None:
    events = min_backlog(stack_settings)  # three batches: a window the database clock can time
    backlog = run_backlog(stack_settings, events, timeout_s=240, say=lambda _: None)
    assert backlog.stored == events
    assert backlog.audit_records >= 2 * events  # event.accepted + event.stored for each
    assert backlog.events_per_s > 0 and backlog.verify_full_per_s > 0
    load = run_load(stack_settings, clients=2, rate=40, seconds=5, say=lambda _: None)
    assert load.stored == load.sent > 100
    assert 0 < load.stored_p50_ms <= load.stored_p99_ms <= load.stored_max_ms
    table = markdown_table([backlog], [load])
    assert "| 2 | 40 |" in table and f"{backlog.stored:,} of {events:,}" in table
    chart = write_chart([load], tmp_path / "chart.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_backlog_too_small_to_time_is_refused_with_the_smallest_that_works(
    stack_settings: Settings,
) -> None:
    with pytest.raises(ValueError, match=f"--events {min_backlog(stack_settings):,}"):
        run_backlog(stack_settings, 300, timeout_s=10, say=lambda _: None)


def test_two_intake_workers_share_a_backlog_and_enrichment_classifies_all_of_it(
    stack_settings: Settings,
) -> None:
    events = min_backlog(stack_settings)
    backlog = run_backlog(stack_settings, events, timeout_s=300, say=lambda _: None,
                          workers=2, enrichment=True)
    assert backlog.workers == 2 and backlog.stored == events
    enriched = backlog.enrichment
    assert enriched is not None and enriched.classified == events
    assert enriched.per_s > 0 and enriched.offline_limit_per_s > 0
    assert enriched.ratio == round(enriched.per_s / enriched.offline_limit_per_s, 3)
    table = markdown_table([backlog], [])
    assert "| measure | 2 intake workers |" in table
    assert f"({events:,} in " in table and "enrichment / offline limit" in table


def test_more_workers_than_partitions_are_refused(stack_settings: Settings) -> None:
    with pytest.raises(ValueError, match="cannot share 2 partitions"):
        run_backlog(stack_settings, min_backlog(stack_settings), timeout_s=10,
                    say=lambda _: None, workers=3)
