"""``attest keys``: producer signing keys and the registry of their public halves."""

from __future__ import annotations

import getpass
import json
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Column, Table

from cli.output import console, err_console, fail
from config.settings import Settings, get_settings
from schemas.audit import AuditAction, AuditRecord, audit_id_for
from schemas.catalog import EVENT_TYPES
from security.errors import SecurityError
from security.keyfiles import generate_key, public_part, write_private_key
from security.signatures import canonical_alg, public_key_for
from storage import keys as registry
from streams.audit_publisher import publish_audit
from streams.errors import BrokerUnavailable

app = typer.Typer(help="Generate, register, list and revoke signing keys; require encryption "
                       "of a key's tokens.", no_args_is_help=True)


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


_TYP_HELP = ("A schema this key may sign (repeatable: --typ attest.transaction.v1 --typ ...); "
             "without it, any schema.")
_DEPARTMENT_HELP = ("The department or agency this key may speak for (the event's `source` for "
                    "transactions and approvals, `agency` for documents); default: the key's "
                    "source.")
_ANY_DEPARTMENT_HELP = ("Let this key speak for any department or agency (a gateway that relays "
                        "for several); without it and without --department, only for its source.")
_REQUIRE_ENCRYPTION_HELP = ("Accept this key's tokens only encrypted (JWE of the JWS to Attest's "
                            "intake key); a plain one is dead-lettered as encryption_required, by "
                            "the worker, `attest replay` and `attest dlq retry` alike. Change it "
                            "later with `attest keys require-encryption`.")
#: ``--department`` not given: the key speaks only for its own source (resolved per key).
SAME_AS_SOURCE = "\0same-as-source"


def _binding(typs: list[str] | None, department: str | None,
             any_department: bool = False) -> tuple[frozenset[str] | None, str | None]:
    """The checked ``--typ``/``--department``/``--any-department`` options: (schemas or None,
    department, ``SAME_AS_SOURCE`` or None for any).

    A key registered with no department used to speak for every department: a ledger's key
    could file a document in the tax bureau's view (review finding). Any is now a choice.
    """
    unknown = sorted(set(typs or ()) - set(EVENT_TYPES))
    if unknown:
        fail(f"--typ {unknown[0]!r} is not an event schema (one of {', '.join(EVENT_TYPES)})")
    if department is not None and any_department:
        fail("give --department or --any-department, not both")
    if department is not None and not (0 < len(department) <= 64 and department.strip() == department):
        fail("--department must be 1-64 characters without surrounding spaces")
    if any_department:
        return (frozenset(typs) if typs else None), None
    return (frozenset(typs) if typs else None), (department if department is not None else SAME_AS_SOURCE)


def _binding_detail(typs: frozenset[str] | None, department: str | None,
                    encrypted_only: bool = False) -> dict[str, object]:
    """What the audit record says of a key's binding (omitted when it has none)."""
    detail: dict[str, object] = {"encrypted_only": True} if encrypted_only else {}
    if typs is not None:
        detail["typs"] = sorted(typs)
    if department is not None:
        detail["department"] = department
    return detail


@app.command()
def generate(
    source: str = typer.Option(..., "--source", "-s", help="The producing system, e.g. core-ledger."),
    alg: str = typer.Option("Ed25519", help="Ed25519 (default) or ES256."),
    kid: str | None = typer.Option(
        None, help="Key id; default <source>-<date>-<random>. Letters, digits and . _ @ + = : , - "
                   "(no path separator, not starting with a dot)."),
    typ: list[str] | None = typer.Option(None, "--typ", help=_TYP_HELP),
    department: str | None = typer.Option(None, "--department", help=_DEPARTMENT_HELP),
    any_department: bool = typer.Option(False, "--any-department", help=_ANY_DEPARTMENT_HELP),
    require_encryption: bool = typer.Option(False, "--require-encryption",
                                            help=_REQUIRE_ENCRYPTION_HELP),
) -> None:
    """Make a key pair, keep the private key in the state folder (0600), register the public key.

    The private JWK is written to ATTEST_STATE_DIR/keys/<kid>.jwk; `attest produce` signs with
    the newest key of a source. Only the public half goes to the database.
    """
    settings = get_settings()
    typs, department = _binding(typ, department, any_department)
    department = source if department == SAME_AS_SOURCE else department
    try:
        key = generate_key(source, alg, kid)
    except SecurityError as exc:
        fail(str(exc))
    # Private file first: a key registered without its private half could never sign.
    path = write_private_key(key, settings.keys_dir)
    registry.add_key(settings.database_url, key.kid, source, key.alg, key.public_jwk,
                     typs=typs, department=department, encrypted_only=require_encryption)
    _audit(settings, AuditAction.KEY_ADDED, key.kid,
           {"source": source, "alg": key.alg,
            **_binding_detail(typs, department, require_encryption)})
    console.print(f"generated {key.alg} key [bold]{key.kid}[/] for {source}")
    console.print(f"private key: {path} (mode 0600)")


def _validated_public_jwk(jwk: object, where: str) -> tuple[str, str, dict[str, Any]]:
    """(kid, canonical alg, public members) of a JWK, or a one-sentence failure."""
    if not isinstance(jwk, dict) or "d" in jwk:
        fail(f"{where}: must be one public JWK (a private key must never be registered)")
    kid, alg = jwk.get("kid"), jwk.get("alg")
    if not isinstance(kid, str) or not kid or not isinstance(alg, str):
        fail(f"{where}: the JWK needs string members 'kid' and 'alg'")
    try:
        name = canonical_alg(alg)
        public_key_for(name, jwk)
    except SecurityError as exc:
        fail(f"{where}: the JWK cannot be used: {exc}")
    return kid, name, public_part(jwk)


def _validity(jwk: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    """Optional ``nbf``/``exp`` members (seconds since the epoch) as the validity window."""
    def at(name: str) -> datetime | None:
        value = jwk.get(name)
        return datetime.fromtimestamp(value, UTC) if isinstance(value, int | float) else None

    return at("nbf"), at("exp")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        fail(f"{path} is not readable JSON: {exc}")


def _new_key(jwk: dict[str, Any], source: str, where: str, typs: frozenset[str] | None,
             department: str | None, encrypted_only: bool) -> registry.NewKey:
    kid, alg, public = _validated_public_jwk(jwk, where)
    not_before, not_after = _validity(jwk)
    department = source if department == SAME_AS_SOURCE else department
    return registry.NewKey(kid, source, alg, public, not_before, not_after, typs, department,
                           encrypted_only)


def _register_all(settings: Settings, keys: list[registry.NewKey]) -> int:
    """Register ``keys`` in one database transaction (all or none), then audit each new one."""
    try:
        added = registry.add_keys(settings.database_url, keys)
    except (registry.KeyConflict, registry.KeyRefused) as exc:
        fail(f"{exc}; nothing was registered" if len(keys) > 1 else str(exc))
    for key, new in zip(keys, added, strict=True):
        if new:
            _audit(settings, AuditAction.KEY_ADDED, key.kid,
                   {"source": key.source, "alg": key.alg,
                    **_binding_detail(key.typs, key.department, key.encrypted_only)})
        console.print(f"{'registered' if new else 'already registered'} {key.kid} ({key.alg}) "
                      f"for {key.source}")
    return sum(added)


@app.command()
def add(
    jwk_file: Path = typer.Option(..., "--jwk", exists=True, dir_okay=False,
                                  help="A public JWK (JSON) with kid and alg."),
    source: str = typer.Option(..., "--source", "-s", help="The source this key may sign for."),
    typ: list[str] | None = typer.Option(None, "--typ", help=_TYP_HELP),
    department: str | None = typer.Option(None, "--department", help=_DEPARTMENT_HELP),
    any_department: bool = typer.Option(False, "--any-department", help=_ANY_DEPARTMENT_HELP),
    require_encryption: bool = typer.Option(False, "--require-encryption",
                                            help=_REQUIRE_ENCRYPTION_HELP),
) -> None:
    """Register a producer's public key from a JWK file. Private members are refused.

    Optional JWK members nbf/exp (seconds since the epoch) set the validity window.
    """
    settings = get_settings()
    typs, department = _binding(typ, department, any_department)
    _register_all(settings, [_new_key(_read_json(jwk_file), source, str(jwk_file), typs, department,
                                      require_encryption)])


@app.command("import")
def import_jwks(
    jwks_file: Path = typer.Option(..., "--jwks", exists=True, dir_okay=False,
                                   help='A JWK Set: {"keys": [...]}, public keys only.'),
    source: str | None = typer.Option(
        None, "--source", "-s",
        help="Source for every key; without it each JWK must carry a 'source' member.",
    ),
    typ: list[str] | None = typer.Option(None, "--typ", help=_TYP_HELP + " Applies to every key."),
    department: str | None = typer.Option(
        None, "--department", help=_DEPARTMENT_HELP + " Applies to every key."),
    any_department: bool = typer.Option(False, "--any-department", help=_ANY_DEPARTMENT_HELP),
    require_encryption: bool = typer.Option(
        False, "--require-encryption", help=_REQUIRE_ENCRYPTION_HELP + " Applies to every key."),
) -> None:
    """Register every key of a JWK Set in one database transaction: all of them or none.

    All keys are checked first; a kid already registered with other content, or one the
    database refuses, registers none of the set.
    """
    settings = get_settings()
    typs, department = _binding(typ, department, any_department)
    document = _read_json(jwks_file)
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys:
        fail(f"{jwks_file} has no 'keys' list")
    plan = []
    for i, jwk in enumerate(keys):
        where = f"{jwks_file} key #{i + 1}"
        _validated_public_jwk(jwk, where)
        claimed = jwk.get("source")
        if source and claimed not in (None, source):
            fail(f"{where} says source {claimed!r}, not {source!r}")
        if not (source or isinstance(claimed, str)):
            fail(f"{where} has no 'source' member; pass --source")
        plan.append(_new_key(jwk, source or claimed, where, typs, department, require_encryption))
    seen: dict[str, registry.NewKey] = {}
    for new in plan:
        if seen.setdefault(new.kid, new) != new:
            fail(f"{jwks_file} holds kid {new.kid!r} twice with different keys; nothing was imported")
    added = _register_all(settings, plan)
    console.print(f"{added} of {len(plan)} keys newly registered")


@app.command("list")
def list_keys() -> None:
    """Show every registered key: source, algorithm, binding (schemas, department; "any" when
    unbound), whether its tokens must come encrypted, validity and revocation."""
    rows = registry.list_keys(get_settings().database_url)
    # The kid is what an operator copies into `keys revoke`: never cut it short, whatever
    # the terminal's width; the other columns give way.
    kid = Column("kid", no_wrap=True, min_width=max((len(r.kid) for r in rows), default=3))
    table = Table(kid, "source", "alg", "schemas", "department", "encrypted", "not after",
                  "revoked")
    for r in rows:
        table.add_row(
            r.kid, r.source, r.alg,
            ", ".join(sorted(r.typs)) if r.typs is not None else "any",
            r.department if r.department is not None else "any",
            "required" if r.encrypted_only else "optional",
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
    _audit(settings, AuditAction.KEY_REVOKED, kid, {"reason": reason})
    console.print(f"revoked {kid} at {record.revoked_at:%Y-%m-%d %H:%M:%S} ({record.revoked_reason})")


@app.command("require-encryption")
def require_encryption(
    kid: str = typer.Argument(..., help="The key id whose tokens must come encrypted."),
    off: bool = typer.Option(False, "--off",
                             help="Accept its plain (unencrypted) tokens again."),
) -> None:
    """Accept a key's tokens only inside a JWE (or again plain, with --off); audited.

    The flag is part of the key registry, so workers (within ATTEST_REGISTRY_REFRESH_S),
    `attest replay` and `attest dlq retry` all refuse a plain token of the key as
    encryption_required. A change is audited as key.encryption_changed; setting the value
    the key already has changes and audits nothing.
    """
    settings = get_settings()
    required = not off
    result = registry.set_encrypted_only(settings.database_url, kid, required)
    if result is None:
        fail(f"no registered key has kid {kid!r}")
    record, changed = result
    state = "only encrypted" if required else "plain or encrypted"
    if not changed:
        console.print(f"{kid} already accepts {state} tokens; nothing changed")
        return
    _audit(settings, AuditAction.KEY_ENCRYPTION_CHANGED, kid,
           {"source": record.source, "encrypted_only": required})
    console.print(f"{kid} ({record.source}) now accepts {state} tokens")


# Attest's own intake keys (nested JWT, docs/events.md), in a module of their own.
from cli import intake_key as _intake_key  # noqa: E402

app.add_typer(_intake_key.app, name="intake-key")
