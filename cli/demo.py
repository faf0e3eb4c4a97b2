"""``attest demo``: the whole pipeline, end to end, on the embedded stack."""

from __future__ import annotations

import signal

import typer
from rich.table import Table

from cli.output import console
from config.settings import get_settings
from devstack.demo import run_demo


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def demo(
    count: int = typer.Option(300, "--count", "-n", min=1, help="Signed events to send."),
    tampered: int = typer.Option(12, "--tampered", min=0, help="How many to alter after signing."),
    documents: int = typer.Option(40, "--documents", min=0,
                                  help="Agency documents (tax returns, contribution records)."),
    timeout: float = typer.Option(300, help="Seconds to wait for every decision."),
    seed: int | None = typer.Option(None, help="Seed for repeatable events (default: new ones)."),
) -> None:
    """Run the whole pipeline on the embedded stack and print a summary.

    Starts the embedded broker and Postgres, migrates, makes a key, runs a worker, sends
    COUNT signed payments (TAMPERED altered, one replayed, one garbage) and DOCUMENTS agency
    documents, waits for every
    decision, prints a summary, and stops what it started. Safe to run again.
    """
    # SIGTERM (a CI timeout, `kill`) must unwind like Ctrl-C so the finally blocks stop the
    # worker, the broker and Postgres instead of orphaning them.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    summary = run_demo(get_settings(), count, min(tampered, count), say=console.print,
                       timeout_s=timeout, documents_count=documents, seed=seed)
    table = Table(title="attest demo summary", show_header=False)
    table.add_row("messages sent", str(summary.sent))
    table.add_row("accepted", str(summary.accepted))
    for reason, n in sorted(summary.rejected.items()):
        table.add_row(f"rejected: {reason}", str(n))
    table.add_row("stored rows (events)", str(summary.stored_rows))
    table.add_row("classified (event.inferred)", str(summary.classified))
    table.add_row("audit records", str(summary.audit_records))
    table.add_row("wall time", f"{summary.seconds:.1f}s")
    console.print(table)
