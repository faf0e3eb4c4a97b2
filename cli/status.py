"""``attest status``: lag, dead letters, throughput, keys, checkpoints, worker health."""

from __future__ import annotations

import typer
from rich.table import Table
from rich.text import Text

from cli.output import console
from config.settings import get_settings
from operations.status import StatusReport, collect_status


def status(
    as_json: bool = typer.Option(False, "--json", help="One JSON object, for scripts."),
    no_worker: bool = typer.Option(False, "--no-worker", help="Do not ask the worker's web endpoint."),
) -> None:
    """Is the pipeline healthy? Exit 0 when it is, non-zero when something is wrong.

    Shows each consumer group's committed offset, end offset and lag per topic and
    partition; dead letters by reason in the last hour (each rejected message once);
    events stored per second over the last minute; the worker's health and model-pool
    queue; keys expiring within 30 days; the newest audit checkpoint and its age.
    Exit codes: 6 broker unreachable, 7 database unreachable, 8 anything else wrong.
    """
    report = collect_status(get_settings(), include_worker=not no_worker)
    if as_json:
        console.print_json(report.model_dump_json())
    else:
        print_report(report)
    raise typer.Exit(report.exit_code)


def print_report(report: StatusReport) -> None:
    lag = Table("group", "topic", "partition", "committed", "end", "lag", title="consumer lag")
    for row in report.lag:
        lag.add_row(Text(row.group), Text(row.topic), str(row.partition),
                    "-" if row.committed is None else f"{row.committed:,}", f"{row.end:,}",
                    f"{row.lag:,}")
    console.print(lag)
    facts = Table("", "", show_header=False, title="pipeline")
    letters = "  ".join(f"{r}: {n}" for r, n in sorted(report.dead_letters_last_hour.items()))
    if report.broker_error:
        letters = "unknown (broker unreachable)"
    facts.add_row("dead letters, last hour", Text(letters or "none"))
    if report.events_per_s_last_minute is not None:
        facts.add_row("events stored/s, last minute", f"{report.events_per_s_last_minute:,.1f}")
    if report.checkpoint:
        cp = report.checkpoint
        facts.add_row("newest audit checkpoint",
                      f"seq {cp.last_seq:,} of {cp.audit_rows:,}, {cp.age_s:,.0f}s old")
    elif report.audit_rows is not None:
        facts.add_row("newest audit checkpoint", f"none ({report.audit_rows:,} audit records)")
    for w in report.workers:
        state = w.status if w.reachable else f"unreachable ({w.error})"
        facts.add_row(f"{w.stage} worker", Text(f"{state} at {w.url}"))
        if w.pool_queue_texts is not None:
            facts.add_row("model pool queue", f"{w.pool_queue_texts:,} texts")
    facts.add_row("keys expiring within 30 days",
                  Text(", ".join(f"{k.kid} ({k.days_left:g}d)" for k in report.expiring_keys) or "none"))
    console.print(facts)
    for warning in report.warnings:
        console.print(Text(f"warning: {warning}", style="yellow"))
    for problem in report.problems:
        console.print(Text(f"problem: {problem}", style="bold red"))
    if not report.problems:
        console.print(Text("ok", style="green"))
