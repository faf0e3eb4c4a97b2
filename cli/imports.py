"""``attest import mt940|camt053 FILE``: bank statements in, as signed ``bank-statement`` events."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli.output import console, fail
from config.settings import get_settings
from schemas.catalog import TRANSACTION_V1
from statements.entries import SOURCE
from statements.errors import StatementError
from statements.importer import StatementFormat, statement_payloads

app = typer.Typer(
    help="Import bank statement files: every entry becomes one signed bank-statement "
         "transaction. The same file imported twice sends the same event ids, so nothing is stored twice.",
    no_args_is_help=True,
)


def _import(kind: StatementFormat, path: Path, source: str, dry_run: bool) -> None:
    try:
        payloads = statement_payloads(kind, path)
    except StatementError as exc:
        fail(f"{path.name}: {exc}; nothing was sent")
    if dry_run:
        for payload in payloads:
            console.print_json(json.dumps({k: payload[k] for k in ("event_id", "value_date", "direction",
                                                                     "currency", "reference")}))
        console.print(f"{len(payloads)} entries read from {path.name}; nothing sent (--dry-run)")
        return
    from security.keyfiles import keys_for_source
    from streams.admin import ensure_topics
    from streams.producer import OutgoingMessage, send_all, sign_payload
    from streams.topics import TRANSACTIONS

    settings = get_settings()
    keys = keys_for_source(settings.keys_dir, source)
    if not keys:
        fail(f"no local key for source {source!r}; run 'attest keys generate --source {source}'")
    messages = [OutgoingMessage(key=p["reference"].encode(), value=sign_payload(keys[0], p, TRANSACTION_V1))
                for p in payloads]
    ensure_topics(settings)
    sent = send_all(settings, TRANSACTIONS.name(settings), messages)
    console.print(f"sent {sent} {source} events from {path.name} to {TRANSACTIONS.name(settings)} "
                  f"signed by {keys[0].kid}")


_FILE = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="The statement file.")
_SOURCE = typer.Option(SOURCE, "--source", "-s", help="Signing source (its newest local key signs).")
_DRY = typer.Option(False, "--dry-run", help="Parse and show the entries; send nothing.")


@app.command("mt940")
def import_mt940(path: Path = _FILE, source: str = _SOURCE, dry_run: bool = _DRY) -> None:
    """Import an MT940 statement file (SWIFT; structured, slash-keyed or free-text :86:).

    Example: `attest import mt940 statement.sta`.
    """
    _import(StatementFormat.mt940, path, source, dry_run)


@app.command("camt053")
def import_camt053(path: Path = _FILE, source: str = _SOURCE, dry_run: bool = _DRY) -> None:
    """Import an ISO 20022 camt.053 bank-to-customer statement (any version .001.02 to .13).

    Example: `attest import camt053 statement.xml`.
    """
    _import(StatementFormat.camt053, path, source, dry_run)
