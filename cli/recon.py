"""``attest recon``: the reconciliation analyst's commands (report, confirm, reject)."""

from __future__ import annotations

import csv
import getpass
import json
import socket
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import typer
from rich.table import Table

from cli.audit import OutputFormat, parse_when
from cli.output import console, fail
from config.settings import Settings, get_settings
from reconcile.report import build_report, flat_rows, write_chart
from schemas.audit import AuditAction, AuditRecord, audit_id_for

app = typer.Typer(help="Reconciliation: the report of matches and breaks, and analysts' decisions "
                       "on suggested matches (each one audited).", no_args_is_help=True)


def operator() -> str:
    return f"operator:{getpass.getuser()}@{socket.gethostname()}"


def _amounts(settings: Settings, breaks: list) -> dict[str, Decimal] | None:  # type: ignore[type-arg]
    """Break amounts, opened with the worker keyring's reconciliation key (None without it)."""
    try:
        from config.settings import secret_environ
        from protection.keyring_sources import open_writer_keyring
        from reconcile.sealing import StateKey

        keyring = open_writer_keyring(settings.state_dir, secret_environ())
        key = StateKey.derive(keyring.blind_index_key("account").material)
        return {b.break_id: Decimal(key.open(b.amount_sealed, f"amount|{b.break_id}".encode()).decode())
                for b in breaks if b.amount_sealed is not None}
    except Exception:  # noqa: BLE001 - no keyring here, or another one: amounts stay sealed
        return None


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
    from storage.reconciliation import list_breaks, list_matches

    settings = get_settings()
    now = datetime.now(UTC)
    start = parse_when(since, "--since", now) if since else None
    truth_data = None
    if truth is not None:
        try:
            truth_data = json.loads(truth.read_text(encoding="utf-8"))
            truth_data["pairings"]
        except (ValueError, KeyError, TypeError):
            fail(f"{truth} is not a truth file written by `attest produce --truth`")
    matches = list_matches(settings.database_url, start)
    breaks = list_breaks(settings.database_url, start)
    result = build_report(matches, breaks, now, _amounts(settings, breaks), truth_data)
    if chart is not None:
        write_chart(result, chart)
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


def _decide(match_id: str, reason: str, status: str, action: AuditAction, allowed: tuple[str, ...]) -> None:
    from storage.reconciliation import decide_match, get_match
    from streams.audit_publisher import publish_audit

    try:
        uuid.UUID(match_id)
    except ValueError:
        fail(f"{match_id!r} is not a match id (a UUID from `attest recon report`)")
    if not reason.strip():
        fail("--reason must say why")
    settings = get_settings()
    actor = operator()
    row = decide_match(settings.database_url, match_id, status, actor, reason, allowed)
    if row is None:
        current = get_match(settings.database_url, match_id)
        if current is None:
            fail(f"no match {match_id}")
        fail(f"match {match_id} is {current.status}; only a {' or '.join(allowed[:-1])} match "
             f"can be {status}")
    record = AuditRecord(
        audit_id=audit_id_for(action, match_id), actor=actor, action=action, correlation_id=match_id,
        subject_ids=[*row.left_ids, *row.right_ids],
        detail={"match_id": match_id, "pairing": row.pairing, "stage": row.stage, "rule": row.rule,
                "score": row.score, "reason": reason},
    )
    publish_audit(settings, [record])
    console.print(f"match {match_id} {status} by {actor}")


@app.command()
def confirm(
    match_id: str = typer.Argument(..., help="The suggested match's id (from `attest recon report`)."),
    reason: str = typer.Option(..., "--reason", help="Why the analyst accepts it (audited)."),
) -> None:
    """Confirm a suggested match: its records count as reconciled (audited as recon.confirmed)."""
    _decide(match_id, reason, "confirmed", AuditAction.RECON_CONFIRMED, ("suggested", "confirmed"))


@app.command()
def reject(
    match_id: str = typer.Argument(..., help="The match's id (from `attest recon report`)."),
    reason: str = typer.Option(..., "--reason", help="Why the analyst refuses it (audited)."),
) -> None:
    """Reject a suggested (or automatic) match: its records are no longer reconciled (recon.rejected)."""
    _decide(match_id, reason, "rejected", AuditAction.RECON_REJECTED, ("suggested", "matched", "rejected"))
