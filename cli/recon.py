"""``attest recon``: the reconciliation analyst's commands (report, confirm, reject, breaks).

Each parses, calls one function of ``operations`` (``recon_report.recon_report``,
``match_decisions.decide``) or of the access service's client (``breaks``) and prints.
"""

from __future__ import annotations

import csv
import getpass
import json
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.table import Table

from cli.audit import OutputFormat, parse_when
from cli.exit_codes import attest_errors
from cli.output import console, fail
from cli.query import TOKEN_FILE
from config.settings import get_settings
from reconcile.report import flat_rows

app = typer.Typer(help="Reconciliation: the report of matches and breaks, and analysts' decisions "
                       "on suggested matches (each one audited).", no_args_is_help=True)


def operator() -> str:
    return f"operator:{getpass.getuser()}@{socket.gethostname()}"


@app.command()
def report(
    since: str | None = typer.Option(None, "--since", help="Matches and breaks from this time (RFC 3339) "
                                     "or age (2h)."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table, json or csv."),
    chart: Path | None = typer.Option(None, "--chart", dir_okay=False,
                                      help="Also draw breaks by reason and match rate over time (PNG)."),
    truth: Path | None = typer.Option(None, "--truth", exists=True, dir_okay=False,
                                      help="Ground truth of a generated run (attest produce --truth): "
                                           "adds precision and recall."),
) -> None:
    """Matched by stage, suggestions awaiting decision, breaks by reason and source, amounts at
    risk, ageing of open breaks; with --truth, precision and recall per stage.

    Example: `attest recon report --since 2h --truth truth.json --chart recon.png`.
    """
    from operations.recon_report import recon_report  # the database layer loads on use only

    settings = get_settings()
    now = datetime.now(UTC)
    start = parse_when(since, "--since", now) if since else None
    with attest_errors():
        result = recon_report(settings, start, truth=truth, chart=chart, now=now)
    if fmt is OutputFormat.json:
        console.print_json(json.dumps(result))
    elif fmt is OutputFormat.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["section", "item", "value"])
        writer.writerows(flat_rows(result))
    else:
        table = Table(title="attest reconciliation report")
        for column in ("section", "item", "value"):
            table.add_column(column)
        for row in flat_rows(result):
            table.add_row(*row)
        console.print(table)
        for s in result["suggested_awaiting_decision"][:20]:
            console.print(f"suggested {s['match_id']} {s['pairing']} {s['stage']} {s['kind']} "
                          f"score {s['score']} ({s['rule']})")
    if chart is not None:
        console.print(f"chart written to {chart}")


def _decide(match_id: str, reason: str, decision: str) -> None:
    from operations.match_decisions import Decision, decide  # the database layer loads on use only

    settings = get_settings()
    actor = operator()
    with attest_errors():
        decide(settings, match_id, Decision(decision), reason, actor)
    console.print(f"match {match_id} {decision} by {actor}")


@app.command()
def confirm(
    match_id: str = typer.Argument(..., help="The suggested match's id (from `attest recon report`)."),
    reason: str = typer.Option(..., "--reason", help="Why the analyst accepts it (audited)."),
) -> None:
    """Confirm a suggested match: its records count as reconciled (audited as recon.confirmed)."""
    _decide(match_id, reason, "confirmed")


@app.command()
def reject(
    match_id: str = typer.Argument(..., help="The match's id (from `attest recon report`)."),
    reason: str = typer.Option(..., "--reason", help="Why the analyst refuses it (audited)."),
) -> None:
    """Reject a suggested (or automatic) match: its records are no longer reconciled (recon.rejected)."""
    _decide(match_id, reason, "rejected")


@app.command()
def breaks(
    token_file: Path = TOKEN_FILE,
    purpose: str = typer.Option(..., "--purpose", help="Why you read: recorded with the read."),
    role: str | None = typer.Option(None, "--role", help="Which of your token's roles to read as."),
    limit: int = typer.Option(100, "--limit", "-n", min=1, max=1000, help="Most discrepancies (newest)."),
    as_json: bool = typer.Option(False, "--json", help="The service's answer as JSON."),
) -> None:
    """Cross-agency discrepancies your department may see, through the access service: the rule
    that fired and the documents' event ids, never a value. The read is audited.

    Example: `attest recon breaks -t tess.token --purpose "2026 consistency review"`.
    """
    from access.errors import AccessError
    from cli.query import client

    try:
        with client(token_file) as service:
            result = service.recon_breaks(purpose, role=role, limit=limit)
    except AccessError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(result))
        return
    for d in result["discrepancies"]:
        console.print(f"{d['break_id']}  {d['rule']}  {d['agency']}  events {', '.join(d['event_ids'])}  "
                      f"visible to {', '.join(d['visible_to'])}", markup=False)
    console.print(f"{len(result['discrepancies'])} discrepancies as {result['role']}; "
                  f"audit {result['read_id']}", markup=False)
