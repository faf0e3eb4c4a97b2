"""``attest keys intake-key``: Attest's own keys that producers encrypt their events to.

Thin: the keys are made, written (0600) and read by ``security.intake_keys``; this parses,
calls and prints. Only public halves are ever printed.
"""

from __future__ import annotations

import json

import typer

from cli.output import err_console, fail
from config.settings import get_settings
from operations.operator_audit import operator_record
from schemas.audit import AuditAction
from security.errors import SecurityError
from security.intake_keys import JWE_ALG, generate_intake_key, load_intake_keys, write_intake_key
from streams.audit_publisher import publish_audit
from streams.errors import BrokerUnavailable

app = typer.Typer(help="Attest's intake keys: producers encrypt events to them (docs/events.md).",
                  no_args_is_help=True)


@app.command()
def generate(
    kid: str | None = typer.Option(
        None, help="Key id; default attest-intake-<date>-<random>. Letters, digits and "
                   ". _ @ + = : , - (no path separator, not starting with a dot)."),
) -> None:
    """Make a new P-256 intake key (0600 in ATTEST_INTAKE_KEYS_PATH, default
    <state dir>/intake-keys) and print its public JWK.

    Older keys stay held, so tokens encrypted to them still open; `public` names the newest.
    Running workers pick the new key up when the first token for it arrives.
    """
    from cli.keys import operator  # the one way the CLI names its operator

    settings = get_settings()
    try:
        key = generate_intake_key(kid)
        path = write_intake_key(key, settings.intake_keys_dir)
    except FileExistsError:
        fail(f"an intake key with kid {kid!r} exists already")
    except SecurityError as exc:
        fail(str(exc))
    try:
        publish_audit(settings, [operator_record(
            AuditAction.KEY_ADDED, key.kid, operator(), {"kind": "intake", "alg": JWE_ALG})])
    except BrokerUnavailable as exc:
        err_console.print(f"[yellow]warning:[/] the key was made but the audit record could "
                          f"not be sent: {exc}")
    err_console.print(f"generated intake key {key.kid}; private key: {path} (mode 0600)")
    typer.echo(json.dumps(key.public_jwk, indent=1))


@app.command()
def public(
    jwks: bool = typer.Option(False, "--jwks", help="Every held key as a JWKS, newest first "
                              "(default: the newest key's JWK alone)."),
) -> None:
    """Print the public JWK producers encrypt to (the newest held key), or all as a JWKS."""
    settings = get_settings()
    try:
        ring = load_intake_keys(settings.intake_keys_dir)
    except SecurityError as exc:
        fail(str(exc))
    if ring.newest is None:
        fail(f"no intake key in {settings.intake_keys_dir}; run 'attest keys intake-key generate'")
    document = ring.public_jwks() if jwks else ring.newest.public_jwk
    typer.echo(json.dumps(document, indent=1))
