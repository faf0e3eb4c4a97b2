"""The benchmark's plumbing with the fake encoder (the real numbers live in docs/inference.md)."""

from __future__ import annotations

import io

import typer
from rich.console import Console
from typer.testing import CliRunner

from bench import inference as bench
from tests.inference.fakes import FakeEncoder


def test_benchmark_measures_every_run_and_renders_the_targets() -> None:
    reports = bench.run_all(lambda precision: FakeEncoder(), ["fp32", "int8"], 160, 10,
                            max_batch=8, max_wait_ms=1.0, repeats=2, cache_size=1000)
    assert [r.precision for r in reports] == ["fp32", "int8"]
    for report in reports:
        assert report.offline.rate > 0 and report.batch_ms > 0 and report.rss_bytes > 0
        names = [run.name for run in report.pool]
        assert names == ["pool, 1 caller", "pool, 10 callers", "pool, 100 callers"]
        assert all(run.rate > 0 and run.p50_ms <= run.p99_ms for run in report.pool)
        assert report.cached is not None and report.cached.hit_rate is not None
        assert 0.0 < report.cached.saved < 1.0  # the scenario repeats texts; the pool skips them
    out = io.StringIO()
    Console(file=out, width=200).print(bench.render(reports, 8, 1.0, 160))
    text = out.getvalue()
    for expected in ("offline limit (batches of 8)", "p99 <= wait + batch", "of limit (>= 90%)",
                     "model skipped", "MiB (< 1.5 GiB)"):
        assert expected in text


def test_scenario_texts_repeat_so_the_cache_matters() -> None:
    texts = bench.scenario_texts(500)
    assert len(texts) == 500 and len(set(texts)) < 450
    assert texts == bench.scenario_texts(500)  # deterministic


def test_command_is_typer_compatible() -> None:
    app = typer.Typer()
    app.command()(bench.command)
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for option in ("--texts", "--single", "--repeats", "--int8", "--no-int8"):
        assert option in result.output
