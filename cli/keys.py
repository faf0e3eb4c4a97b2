"""``attest keys``: producer signing keys and the registry of their public halves."""

from __future__ import annotations

import getpass
import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.table import Table

from cli.output import console, err_console, fail
from config.settings import Settings, get_settings
from schemas.audit import AuditRecord, audit_id_for
from security.keyfiles import generate_key, public_part, write_private_key
from security.signatures import canonical_alg, public_key_for
from storage import keys as registry
from streams.audit_publisher import publish_audit
from streams.errors import BrokerUnavailable

app = typer.Typer(help="Generate, register, list and revoke signing keys.", no_args_is_help=True)


def operator() -> str:
    return f"operator:{getpass.getuser()}@{socket.gethostname()}"


def _audit(settings: Settings, action: str, kid: str, detail: dict[str, object]) -> None:
    record = AuditRecord(
        audit_id=audit_id_for(action, kid, datetime.now(UTC).isoformat()),
        actor=operator(), action=action, correlation_id=kid, subject_ids=[kid], detail=detail,
    )
    try:
        publish_audit(settings, [record])
    except BrokerUnavailable as exc:
        err_console.print(f"[yellow]warning:[/] the registry changed but the audit record "
                          f"could not be sent: {exc}")


@app.command()
def generate(
    source: str = typer.Option(..., "--source", "-s", help="The producing system, e.g. core-ledger."),
    alg: str = typer.Option("Ed25519", help="Ed25519 (default) or ES256."),
    kid: str | None = typer.Option(None, help="Key id; default <source>-<date>-<random>."),
) -> None:
    """Make a key pair, keep the private key in the state folder (0600), register the public key.

    The private JWK is written to ATTEST_STATE_DIR/keys/<kid>.jwk; `attest produce` signs with
    the newest key of a source. Only the public half goes to the database.
    """
    settings = get_settings()
    try:
        key = generate_key(source, alg, kid)
    except Exception as exc:  # noqa: BLE001 - unsupported alg -> one sentence
        fail(str(exc))
    registry.add_key(settings.database_url, key.kid, source, key.alg, key.public_jwk)
    path = write_private_key(key, settings.keys_dir)
    _audit(settings, "key.added", key.kid, {"source": source, "alg": key.alg})
    console.print(f"generated {key.alg} key [bold]{key.kid}[/] for {source}")
    console.print(f"private key: {path} (mode 0600)")


@app.command()
def add(
    jwk_file: Path = typer.Option(..., "--jwk", exists=True, dir_okay=False,
                                  help="A public JWK (JSON) with kid and alg."),
    source: str = typer.Option(..., "--source", "-s", help="The source this key may sign for."),
) -> None:
    """Register a producer's public key from a JWK file. Private members are refused."""
    settings = get_settings()
    try:
        jwk = json.loads(jwk_file.read_text())
    except ValueError:
        fail(f"{jwk_file} is not JSON")
    if not isinstance(jwk, dict) or "d" in jwk:
        fail("the file must hold one public JWK (a private key must never be registered)")
    kid, alg = jwk.get("kid"), jwk.get("alg")
    if not isinstance(kid, str) or not isinstance(alg, str):
        fail("the JWK needs string members 'kid' and 'alg'")
    try:
        name = canonical_alg(alg)
        public_key_for(name, jwk)
    except Exception as exc:  # noqa: BLE001
        fail(f"the JWK cannot be used: {exc}")
    added = registry.add_key(settings.database_url, kid, source, name, public_part(jwk))
    if added:
        _audit(settings, "key.added", kid, {"source": source, "alg": name})
    console.print(f"{'registered' if added else 'already registered'} {kid} ({name}) for {source}")


@app.command("list")
def list_keys() -> None:
    """Show every registered key: source, algorithm, validity and revocation."""
    rows = registry.list_keys(get_settings().database_url)
    table = Table("kid", "source", "alg", "not after", "revoked")
    for r in rows:
        table.add_row(
            r.kid, r.source, r.alg,
            r.not_after.isoformat(timespec="seconds") if r.not_after else "-",
            f"{r.revoked_at:%Y-%m-%d %H:%M} {r.revoked_reason or ''}" if r.revoked_at else "-",
        )
    console.print(table)


@app.command()
def revoke(
    kid: str = typer.Argument(..., help="The key id to revoke."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded and audited)."),
) -> None:
    """Revoke a key now. Workers refuse its events within seconds; the row is kept."""
    settings = get_settings()
    record = registry.revoke_key(settings.database_url, kid, reason, datetime.now(UTC))
    if record is None:
        fail(f"no registered key has kid {kid!r}")
    _audit(settings, "key.revoked", kid, {"reason": reason})
    console.print(f"revoked {kid} at {record.revoked_at:%Y-%m-%d %H:%M:%S} ({record.revoked_reason})")
