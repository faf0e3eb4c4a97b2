"""``attest replay``: reprocess a range of a topic through the live intake, idempotently."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from cli.exit_codes import operator_errors
from cli.keys import operator
from cli.output import console, err_console, fail
from config.settings import Settings, get_settings
from operations.broker_reads import BrokerReader
from operations.errors import ExitCode
from operations.replay import Replay, ReplayResult, plan
from operations.selection import REPLAYABLE, Selection
from operations.times import parse_time


class RateColumn(ProgressColumn):
    """Messages per second, from Rich's own moving estimate."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} msg/s" if task.speed else "- msg/s")


def run_replay(settings: Settings, selection: Selection, why: str, rate: float | None) -> ReplayResult:
    """Plan (or resume), run with a progress bar, stop cleanly on Ctrl-C."""
    with BrokerReader(settings) as reader:
        progress_state = plan(settings, selection, reader)
    if progress_state.done:
        err_console.print(f"resuming: {progress_state.done:,} of {progress_state.total:,} already done")
    stop = threading.Event()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               RateColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task("dry run" if selection.dry_run else "replay", total=progress_state.total,
                            completed=progress_state.done)
        replay = Replay(settings, selection, reason=why, actor=operator(), rate=rate, stop=stop,
                        on_advance=lambda n: bar.advance(task, n))

        async def main() -> ReplayResult:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGINT, stop.set)
            return await replay.run(progress_state)

        return asyncio.run(main())


def print_result(result: ReplayResult) -> None:
    table = Table("outcome", "messages", title="dry run: nothing was written" if result.dry_run else None)
    for name, count in sorted(result.counts.items()):
        table.add_row(Text(name), f"{count:,}")
    console.print(table)
    console.print(f"{result.processed_this_run:,} messages in {result.seconds:.1f}s "
                  f"({result.rate:,.0f}/s)" + (f"; model {result.model_version}" if result.model_version
                                               else ""), markup=False)
    for note in result.notes:
        err_console.print(f"[yellow]warning:[/] {note}")


def finish(result: ReplayResult) -> None:
    print_result(result)
    if result.interrupted:
        err_console.print(f"stopped at {result.done:,} of {result.total:,}; "
                          "run the same command again to resume")
        raise typer.Exit(int(ExitCode.INTERRUPTED))


def replay(
    topic: str = typer.Option(..., help=f"One of: {', '.join(REPLAYABLE)}."),
    reason: str = typer.Option(..., help="Why you replay (recorded in the audit trail)."),
    partition: int | None = typer.Option(None, help="Only this partition."),
    from_offset: int | None = typer.Option(None, help="First offset (needs --partition)."),
    to_offset: int | None = typer.Option(None, help="Last offset, inclusive (needs --partition)."),
    since: str | None = typer.Option(None, help="From this time: RFC 3339, or a duration ago (2h)."),
    until: str | None = typer.Option(None, help="Up to this time (same forms as --since)."),
    event_id: list[str] = typer.Option([], "--event-id", help="A stored event, found by its "
                                       "stored position (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would happen; write nothing."),
    rate: float | None = typer.Option(None, min=0.1, help="At most this many messages per second."),
    model_version: str | None = typer.Option(
        None, help="A local model folder: classify again with it; results sit beside the old."),
) -> None:
    """Reprocess messages of a topic through verification, storage, inference and audit.

    What was stored from the same bytes at the same position changes nothing, so a replay is
    safe to repeat. The issued_at window is not applied (the audited exception). Ctrl-C stops
    after the batch in hand; the same command resumes. Exit codes: docs/operations.md.
    """
    settings = get_settings()
    if model_version is not None:
        if not Path(model_version).is_dir():
            fail(f"--model-version {model_version} is not a model folder", int(ExitCode.USAGE))
        model_version = str(Path(model_version).resolve())
    with operator_errors():
        selection = Selection(
            topic=topic, partition=partition, from_offset=from_offset, to_offset=to_offset,
            since=parse_time(since) if since else None, until=parse_time(until) if until else None,
            event_ids=tuple(event_id), model_dir=model_version, dry_run=dry_run,
            extra={name: text for name, text in (("since", since), ("until", until)) if text},
        )
        result = run_replay(settings, selection, reason, rate)
    finish(result)
