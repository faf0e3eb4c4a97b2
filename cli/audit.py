"""``attest audit``: follow the audit trail, query it, and prove it was not altered."""

from __future__ import annotations

import csv
import json
import re
import sys
from contextlib import closing
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

import typer
from rich.table import Table

from audit.check import verify_log
from audit.errors import AuditCheckError
from audit.published import follow_audit_topic
from audit.queries import AuditQuery, StoredAudit, query_page
from audit.trust import pin_keys, service_public_jwk
from cli.output import console, err_console, fail
from config.errors import AttestError
from config.settings import get_settings
from schemas.audit import AuditRecord

app = typer.Typer(
    help="Follow, query and verify the audit trail (hash-chained, with signed checkpoints).",
    no_args_is_help=True,
)
_AGE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def format_record(record: AuditRecord) -> str:
    where = (f" {record.source_topic}/{record.source_partition}/{record.source_offset}"
             if record.source_topic else "")
    reason = f" [red]{record.reason}[/]" if record.reason else ""
    return (f"{record.time:%H:%M:%S.%f}"[:-3] + f" {record.action:<15}{reason} "
            f"{record.correlation_id or '-'}{where} [dim]{record.actor}[/]")


@app.command()
def tail(
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest record."),
    count: int | None = typer.Option(None, "--count", "-n", min=1, help="Stop after N records."),
    idle_exit: float | None = typer.Option(
        None, "--idle-exit", help="Stop after this many seconds without a record."
    ),
) -> None:
    """Show audit records as they arrive on the audit topic (Ctrl-C to stop).

    This reads the topic, not the table: use `attest audit query` for what was stored.
    """
    with closing(follow_audit_topic(get_settings(), from_beginning, count, idle_exit)) as items:
        try:
            for item in items:
                if item.broker_error is not None:
                    console.print(f"[yellow]{item.broker_error}[/]")
                elif item.unparseable_offset is not None:
                    console.print(f"[red]unparseable audit record at offset {item.unparseable_offset}[/]")
                for record in item.records:
                    console.print(format_record(record))
        except KeyboardInterrupt:
            pass


def parse_when(value: str, option: str, now: datetime) -> datetime:
    """RFC 3339 / ISO 8601 (a bare date or a time without offset is UTC), or an age: 15m, 2h, 7d."""
    text = value.strip()
    try:
        if match := _AGE.match(text):
            return now - timedelta(**{_UNITS[match[2]]: int(match[1])})
        when = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        fail(f"{option} {value!r} is not a time: use RFC 3339 (2026-01-31T12:00:00Z), a date "
             "(2026-01-31) or an age (15m, 2h, 7d)")
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.command()
def verify(
    key: list[Path] = typer.Option(
        [], "--key", exists=True, dir_okay=False, metavar="FILE",
        help="A public JWK trusted to sign checkpoints, for this run only; repeatable. "
             "Default: ATTEST_AUDIT_PUBLIC_KEY, else the key pinned by `attest audit pin`.",
    ),
    publish_wait: float = typer.Option(
        10.0, "--publish-wait", min=0, metavar="SECONDS",
        help="When the database holds checkpoints and the audit topic none, re-read the topic "
             "for up to this long before saying NOT VERIFIED: the worker stores a checkpoint "
             "a moment before it publishes it.",
    ),
) -> None:
    """Recompute the hash chain and check it against every signed checkpoint and the topic's.

    Compares the log with the newest checkpoint published on the audit topic too.

    Streams the log in seq order, so memory stays flat. Exit 0: "intact: N
    records, M checkpoints verified". Exit 2: "TAMPERED: " and the first problem
    (a changed, missing, inserted or reordered row, a cut tail, a forged
    checkpoint). Exit 1: it could not check (no database, no pinned key).
    Exit 6 (broker unreachable) or 3 (no audit topic, or no checkpoint on it):
    "NOT VERIFIED": the chain was checked but a cut tail would go unnoticed.
    Signatures are checked only against a pinned key, never against the
    writer's private key file (docs/audit.md).
    """
    try:
        report = verify_log(get_settings(), key, publish_wait_s=publish_wait)
    except AuditCheckError as exc:
        fail(str(exc), int(exc.exit_code))
    for line in report.lines:
        typer.echo(line)
    if report.exit_code:
        raise typer.Exit(int(report.exit_code))


@app.command()
def pin(
    key: list[Path] = typer.Option(
        ..., "--key", exists=True, dir_okay=False, metavar="FILE",
        help="The public JWK that signs checkpoints (from `attest audit pubkey` on the signer); "
             "repeatable (a key rotation: old and new).",
    ),
    replace: bool = typer.Option(False, "--replace", help="Replace a different pinned key."),
) -> None:
    """Pin the public key `attest audit verify` trusts, once (read-only, audited).

    Stored as ATTEST_STATE_DIR/audit-public-key.jwk, mode 0444. The same key again changes
    nothing; a different one is refused unless --replace is given, and every change is
    published to the audit topic first (exit 10 when that fails: nothing is pinned).
    """
    try:
        result = pin_keys(get_settings(), key, replace=replace)
    except AuditCheckError as exc:
        fail(str(exc), int(exc.exit_code))
    if not result.changed:
        typer.echo(f"already pinned: {result.names} ({result.path})")
    else:
        verb = "replaced the pinned key with" if result.replaced else "pinned"
        typer.echo(f"{verb} {result.names} ({result.path})")


@app.command()
def pubkey() -> None:
    """Print the public JWK that signs audit checkpoints.

    The service key is created (0600) on first use. Hand the JWK to auditors, who pin it
    once (`attest audit pin --key FILE`): verify trusts only a pinned or given key.
    """
    typer.echo(json.dumps(service_public_jwk(get_settings()), indent=2))


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


_CSV_FIELDS = ["seq", *AuditRecord.model_fields, "row_hash"]


def _flat(item: StoredAudit) -> dict[str, object]:
    return {"seq": item.seq, **item.record.model_dump(mode="json"), "row_hash": item.row_hash}


def _print_page(page: list[StoredAudit], output: OutputFormat) -> None:
    if output is OutputFormat.json:
        typer.echo(json.dumps([_flat(item) for item in page], indent=2, ensure_ascii=False))
    elif output is OutputFormat.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=_CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for item in page:
            row = _flat(item)
            row["subject_ids"] = " ".join(item.record.subject_ids)
            row["detail"] = json.dumps(item.record.detail, separators=(",", ":"), ensure_ascii=False)
            writer.writerow(row)
    else:
        table = Table("seq", "time (UTC)", "action", "outcome", "event / subject", "actor")
        for column in (table.columns[1], table.columns[2]):
            column.no_wrap = True
        for item in page:
            r = item.record
            outcome = r.outcome + (f" {r.reason}" if r.reason else "")
            table.add_row(str(item.seq), f"{r.time.astimezone(UTC):%Y-%m-%dT%H:%M:%S}", r.action,
                          outcome, r.correlation_id or " ".join(r.subject_ids) or "-", r.actor)
        console.print(table)


@app.command()
def query(
    subject: str | None = typer.Option(None, "--subject", help="Records about this subject id."),
    event_id: str | None = typer.Option(None, "--event-id", help="Records about this event id."),
    actor: str | None = typer.Option(None, "--actor", help="Decisions taken by this actor."),
    action: str | None = typer.Option(None, "--action", help="e.g. event.rejected, key.revoked."),
    since: str | None = typer.Option(None, "--since", help="From this time (RFC 3339) or age (2h)."),
    until: str | None = typer.Option(None, "--until", help="Before this time (RFC 3339) or age."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table, json or csv.",
                                        case_sensitive=False),
    limit: int = typer.Option(100, "--limit", min=1, max=100_000, help="Most records per page."),
    after_seq: int = typer.Option(0, "--after-seq", min=0,
                                  help="Page on: only records after this seq."),
) -> None:
    """Find who did what to which record: filter the stored audit log, oldest first.

    Filters combine (AND). Results come in pages of --limit in seq order; when
    a page is full, the option for the next page (--after-seq N) is printed to
    stderr, so stdout stays machine-readable.
    """
    now = datetime.now(UTC)
    start = parse_when(since, "--since", now) if since else None
    end = parse_when(until, "--until", now) if until else None
    if start and end and start >= end:
        fail("--since must be earlier than --until")
    filters = AuditQuery(subject=subject, event_id=event_id, actor=actor, action=action,
                         since=start, until=end, after_seq=after_seq, limit=limit)
    try:
        page = query_page(get_settings().database_url, filters)
    except AuditCheckError as exc:
        fail(str(exc), int(exc.exit_code))
    _print_page(page, output)
    if len(page) == limit:
        err_console.print(f"more records: add --after-seq {page[-1].seq}", highlight=False)
    elif not page and output is OutputFormat.table:
        err_console.print("no matching records")


signers_app = typer.Typer(
    help="The keys that may sign audit messages on the audit topic, and for whom (audited).",
    no_args_is_help=True,
)
app.add_typer(signers_app, name="signers")


@signers_app.command("add")
def signers_add(
    component: str = typer.Argument(..., help="Who holds the key: worker, operator, or another name."),
    public_key: Path | None = typer.Option(
        None, "--public-key", exists=True, dir_okay=False, metavar="FILE",
        help="The component's public Ed25519 JWK (made on its own machine). Default: this "
             "folder's key file for COMPONENT (ATTEST_AUDIT_SIGNERS_DIR), created 0600 if absent."),
    actor: list[str] = typer.Option(
        [], "--actor", metavar="PATTERN",
        help="An actor the key may sign records for: exact, or a prefix ending in * "
             "(repeatable). Default: worker -> 'worker:*' and 'audit-sink'; operator -> 'operator:*'."),
) -> None:
    """Register an audit-signing key (audited: audit.signer_added).

    The row is committed, then its audit record published; if that record cannot be
    sent, the key is revoked again and the command exits 10. The same key again
    changes nothing. Exit 1: a conflicting or unusable key, or no database.
    """
    from audit.signers_admin import add_signer, operator_actor

    jwk = None
    if public_key is not None:
        try:
            document = json.loads(public_key.read_text())
        except (OSError, ValueError) as exc:
            fail(f"{public_key} is not a JWK: {exc}")
        jwk = document.get("jwk", document) if isinstance(document, dict) else document
        if not isinstance(jwk, dict):
            fail(f"{public_key} is not a JWK object")
    try:
        result = add_signer(get_settings(), component, operator_actor(), public_jwk=jwk, actors=actor)
    except AttestError as exc:
        fail(str(exc), int(getattr(exc, "exit_code", 1)))
    verb = "registered" if result.added else "already registered:"
    typer.echo(f"{verb} {result.signer.kid} ({result.signer.component}) for "
               f"{', '.join(result.signer.actors)}")


@signers_app.command("pubkey")
def signers_pubkey(
    component: str = typer.Argument(..., help="worker, operator, or another component name."),
) -> None:
    """Print the public JWK of this folder's audit-signing key for COMPONENT.

    The key file is created (0600) if absent. Run it where the component runs; register
    the output elsewhere with `attest audit signers add COMPONENT --public-key FILE`.
    """
    from audit.signers_admin import local_public_jwk

    try:
        typer.echo(json.dumps(local_public_jwk(get_settings(), component), indent=2))
    except AttestError as exc:
        fail(str(exc), int(getattr(exc, "exit_code", 1)))


@signers_app.command("list")
def signers_list(
    as_json: bool = typer.Option(False, "--json", help="JSON instead of a table."),
) -> None:
    """Registered audit signers, revoked ones included."""
    from audit.signers import list_signers

    try:
        rows = list_signers(get_settings().database_url)
    except AttestError as exc:
        fail(str(exc), int(getattr(exc, "exit_code", 1)))
    if as_json:
        typer.echo(json.dumps([{
            "kid": r.signer.kid, "component": r.signer.component, "actors": list(r.signer.actors),
            "x": r.signer.public_jwk.get("x"), "registered_at": r.registered_at.isoformat(),
            "registered_by": r.registered_by,
            "revoked_at": r.signer.revoked_at.isoformat() if r.signer.revoked_at else None,
            "revoked_by": r.revoked_by} for r in rows], indent=2))
        return
    table = Table("kid", "component", "actors", "registered", "revoked")
    for r in rows:
        table.add_row(r.signer.kid, r.signer.component, ", ".join(r.signer.actors),
                      f"{r.registered_at:%Y-%m-%d %H:%M} by {r.registered_by}",
                      f"{r.signer.revoked_at:%Y-%m-%d %H:%M} by {r.revoked_by}"
                      if r.signer.revoked_at else "-")
    console.print(table)


@signers_app.command("revoke")
def signers_revoke(kid: str = typer.Argument(..., help="The kid to revoke.")) -> None:
    """Revoke an audit signer (audited first: audit.signer_revoked; exit 10 if it cannot be).

    From the sink's next batch on, messages signed by it are refused and raise
    audit.forged. The row stays (revocation is a record, never a deletion).
    """
    from audit.signers_admin import operator_actor, revoke_audited

    try:
        changed = revoke_audited(get_settings(), kid, operator_actor())
    except AttestError as exc:
        fail(str(exc), int(getattr(exc, "exit_code", 1)))
    typer.echo(f"revoked {kid}" if changed else f"{kid} was revoked already")
