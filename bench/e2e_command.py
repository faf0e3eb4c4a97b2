"""``attest bench e2e``: the command around bench/e2e.py (parse, run, print, write results)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from bench.e2e import (
    REFERENCE,
    RESULTS,
    BacklogResult,
    backlog_label,
    markdown_table,
    run_backlog,
    run_load,
    write_chart,
    write_results,
)
from config.settings import get_settings

BACKLOG_TARGET = 5000.0
RATIO_TARGET = 0.6
P99_TARGET_MS = 50.0
ENRICHMENT_TARGET = 0.8


def command(
    mode: str = typer.Option("backlog", help="backlog: produce N, then drain; load: offered rates "
                             "from 10, 50 and 100 concurrent clients."),
    events: int = typer.Option(20_000, "--events", "-n", min=100, help="Backlog size."),
    rate: float = typer.Option(0.0, help="Load mode: offered events/s in all (0: half of the "
                               "backlog rate measured first)."),
    seconds: float = typer.Option(60.0, min=5, help="Load mode: seconds per client count."),
    clients: list[int] = typer.Option(  # noqa: B008 - typer's way of declaring a list option
        [10, 50, 100], "--clients", help="Load mode: client counts."),
    workers: list[int] = typer.Option(  # noqa: B008 - typer's way of declaring a list option
        [1], "--workers", help="Backlog: intake workers in one consumer group; repeat the option "
        "(--workers 1 --workers 2) to drain a fresh backlog with each and compare."),
    enrichment: bool = typer.Option(
        False, "--enrichment/--no-enrichment", help="Backlog: then classify the first backlog "
        "with an enrichment worker (cache off) and compare with the model's offline limit "
        "measured in the same run (loads the model: about a minute more)."),
    baseline: bool = typer.Option(
        False, "--baseline/--no-baseline", help="Backlog: also drain a fresh backlog with one "
        "intake worker reading through Faust's per-message stream (ATTEST_INTAKE_CONSUMER=faust, "
        "the first wave's path), the baseline of the batch consumer, in the same run."),
    timeout_s: float = typer.Option(900.0, help="Give up draining after this long."),
) -> None:
    """Throughput and latency of the whole pipeline on the running stack (`attest dev up`).

    Each run uses topics and a consumer group of its own and starts its own intake worker,
    so nothing else on the stack is disturbed. Writes bench/results/e2e-*.json, the markdown
    tables of docs/performance.md (bench/results/e2e-latest.md) and, in load mode, a chart of
    latency against throughput (bench/results/e2e-latency.png); prints the reference system's
    table beside its own. Targets: backlog >= 5,000 events/s and e2e /
    verify >= 0.6; load p99 issued_at -> committed row <= 50 ms at half the backlog rate;
    enrichment >= 80% of the model's offline limit.
    """
    console = Console()
    settings = get_settings()
    if mode not in ("backlog", "load"):
        raise typer.BadParameter("mode is backlog or load")
    backlogs = []
    runs: list[tuple[int, str | None]] = [(count, None) for count in workers]
    if baseline:
        runs.append((1, "faust"))
    for index, (count, consumer) in enumerate(runs):
        try:
            backlog = run_backlog(settings, events, timeout_s, say=console.print, workers=count,
                                  enrichment=enrichment and index == 0, intake_consumer=consumer)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--events/--workers") from None
        backlogs.append(backlog)
        console.print(backlog_table(backlog))
    console.print(f"results: {write_results('backlog', backlogs)}")
    if mode == "backlog":
        (RESULTS / "e2e-latest.md").write_text(markdown_table(backlogs, []))
        return
    backlog = backlogs[0]
    offered = rate or backlog.events_per_s / 2
    results = [run_load(settings, n, offered, seconds, say=console.print) for n in clients]
    table = Table(title=f"attest bench e2e load: {offered:,.0f} events/s offered, {seconds:.0f}s each")
    for column in ("clients", "achieved/s", "stored p50/p95/p99/max ms", "audit p50/p99 ms",
                   "reference ops/s (avg/p99 ms)"):
        table.add_column(column, justify="right")
    for r in results:
        ref = REFERENCE.get(r.clients)
        table.add_row(str(r.clients), f"{r.achieved_per_s:,.0f}",
                      f"{r.stored_p50_ms}/{r.stored_p95_ms}/{r.stored_p99_ms}/{r.stored_max_ms}",
                      f"{r.audit_p50_ms}/{r.audit_p99_ms}",
                      f"{ref[0]:,} ({ref[1]}/{ref[2]})" if ref else "")
    console.print(table)
    console.print(f"p99 target <= {P99_TARGET_MS:.0f} ms: "
                  f"{'met' if all(r.stored_p99_ms <= P99_TARGET_MS for r in results) else 'MISSED'}")
    console.print(f"results: {write_results('load', results)}")
    console.print(f"chart: {write_chart(results, RESULTS / 'e2e-latency.png')}")
    (RESULTS / "e2e-latest.md").write_text(markdown_table(backlogs, results))


def backlog_table(backlog: BacklogResult) -> Table:
    """One backlog run beside its targets."""
    table = Table(title=f"attest bench e2e backlog: {backlog.events:,} events, "
                        f"{backlog_label(backlog)}, {backlog.cpu_count} cores")
    for column in ("measure", "value", "target"):
        table.add_column(column)
    met = "met" if backlog.events_per_s >= BACKLOG_TARGET else "MISSED"
    table.add_row("stored events/s (db clock, first to last row)", f"{backlog.events_per_s:,.0f}",
                  f">= {BACKLOG_TARGET:,.0f}: {met}")
    table.add_row("audit records/s", f"{backlog.audit_per_s:,.0f}", "")
    table.add_row("bench verify full path events/s (same run, one core)",
                  f"{backlog.verify_full_per_s:,.0f}", "")
    table.add_row("e2e / verify", f"{backlog.ratio_to_verify:.2f}",
                  f">= {RATIO_TARGET}: {'met' if backlog.ratio_to_verify >= RATIO_TARGET else 'MISSED'}")
    table.add_row("worker RSS start -> end (MiB)",
                  f"{backlog.rss_start_mib:.0f} -> {backlog.rss_end_mib:.0f}", "")
    e = backlog.enrichment
    if e is not None:
        table.add_row(f"enrichment events classified/s (cache off, batches of {e.max_batch})",
                      f"{e.per_s:,.0f}", "")
        table.add_row("model offline limit, same run (texts/s)", f"{e.offline_limit_per_s:,.0f}", "")
        table.add_row("enrichment / offline limit", f"{e.ratio:.0%}",
                      f">= {ENRICHMENT_TARGET:.0%}: {'met' if e.ratio >= ENRICHMENT_TARGET else 'MISSED'}")
    return table
