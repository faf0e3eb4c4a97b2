"""``attest audit``: follow the audit trail, query it, and prove it was not altered."""

from __future__ import annotations

import csv
import json
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import NoReturn

import typer
from confluent_kafka import Consumer, KafkaError
from pydantic import ValidationError
from rich.table import Table
from sqlalchemy.exc import ProgrammingError

from audit.checkpoints import CheckpointSigner, NoteVerifier, load_or_create_service_key
from audit.log import count_checkpoints, verify_stored_chain
from audit.queries import AuditQuery, StoredAudit, query_records
from cli.output import console, err_console, fail
from config.settings import Settings, get_settings
from schemas.audit import AuditRecord, records_in
from security.errors import SecurityError
from security.keyfiles import load_private_key
from streams.admin import ensure_topics, kafka_config
from streams.topics import AUDIT

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
    import time

    settings = get_settings()
    ensure_topics(settings)
    consumer = Consumer({
        **kafka_config(settings),
        "group.id": f"attest-tail-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "enable.auto.commit": False,
        "session.timeout.ms": int(settings.session_timeout_s * 1000),
    })
    consumer.subscribe([AUDIT.name(settings)])
    seen, last = 0, time.monotonic()
    try:
        while count is None or seen < count:
            msg = consumer.poll(0.5)
            if msg is None:
                if idle_exit is not None and time.monotonic() - last > idle_exit:
                    break
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    console.print(f"[yellow]{msg.error().str()}[/]")
                continue
            last = time.monotonic()
            seen += 1
            try:
                for record in records_in(msg.value()):
                    console.print(format_record(record))
            except ValidationError:
                console.print(f"[red]unparseable audit record at offset {msg.offset()}[/]")
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


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


def _missing_tables(exc: ProgrammingError) -> NoReturn:
    if "audit_checkpoints" in str(exc) or "prev_hash" in str(exc) or "audit_log" in str(exc):
        fail("the audit tables are missing or out of date: run `attest db upgrade`")
    raise exc


def _trusted_keys(settings: Settings, files: list[Path]) -> list[NoteVerifier]:
    """The keys whose checkpoint signatures count: the given public JWKs, else our own key."""
    verifiers = []
    for path in files:
        try:
            document = json.loads(path.read_text())
            jwk = document.get("jwk", document) if isinstance(document, dict) else None
            if not isinstance(jwk, dict):
                raise SecurityError("not a JWK object")
            verifiers.append(NoteVerifier.from_jwk({k: v for k, v in jwk.items() if k != "d"}))
        except (OSError, ValueError, SecurityError) as exc:
            fail(f"{path} is not a usable Ed25519 public JWK: {exc}")
    if not files and settings.service_key_path.exists():
        verifiers.append(CheckpointSigner(load_private_key(settings.service_key_path)).verifier())
    return verifiers


@app.command()
def verify(
    key: list[Path] = typer.Option(
        [], "--key", exists=True, dir_okay=False, metavar="FILE",
        help="A public JWK trusted to sign checkpoints (from `attest audit pubkey`); repeatable. "
             "Default: this installation's service key.",
    ),
) -> None:
    """Recompute the whole hash chain and check every signed checkpoint against it.

    Streams the log in seq order, so memory stays flat. Prints
    "intact: N records, M checkpoints verified" and exits 0, or names the
    first problem (a changed, missing, inserted or reordered row, a forged
    checkpoint) and exits 2. Exit 1: it could not check (no database, no key).
    """
    settings = get_settings()
    url = settings.database_url
    verifiers = _trusted_keys(settings, key)
    try:
        if not verifiers and count_checkpoints(url):
            fail(f"no trusted key to check checkpoint signatures ({settings.service_key_path} "
                 "does not exist): pass --key with the JWK printed by `attest audit pubkey`")
        verdict = verify_stored_chain(url, verifiers)
    except ProgrammingError as exc:
        _missing_tables(exc)
    if verdict.problem is not None:
        typer.echo(f"TAMPERED: {verdict.problem.message}")
        typer.echo(f"(verified before it: {verdict.records} records, "
                   f"{verdict.checkpoints} checkpoints)")
        raise typer.Exit(2)
    typer.echo(f"intact: {verdict.records} records, {verdict.checkpoints} checkpoints verified")
    tail = verdict.records - verdict.last_checkpoint_seq
    if tail:
        typer.echo(f"({tail} records after the last checkpoint are chained but not yet signed)")


@app.command()
def pubkey() -> None:
    """Print the public JWK that signs audit checkpoints.

    The service key is created (0600) on first use. Hand the JWK to auditors:
    `attest audit verify --key FILE` trusts exactly the keys it is given.
    """
    key = load_or_create_service_key(get_settings().service_key_path)
    typer.echo(json.dumps(key.public_jwk, indent=2))


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
        page = query_records(get_settings().database_url, filters)
    except ProgrammingError as exc:
        _missing_tables(exc)
    _print_page(page, output)
    if len(page) == limit:
        err_console.print(f"more records: add --after-seq {page[-1].seq}", highlight=False)
    elif not page and output is OutputFormat.table:
        err_console.print("no matching records")
