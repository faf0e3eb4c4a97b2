"""``attest identity``: the built-in issuer of the embedded stack (people and access tokens).

An operator holding the issuer's key (``<state>/issuer/signing-key.jwk``) registers people with
their department and roles and mints short-lived RFC 9068 access tokens for them. With a real
OIDC provider (``ATTEST_OIDC_ISSUER`` / ``ATTEST_OIDC_JWKS``) these commands are not needed.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.table import Table

from access.errors import AccessError
from access.issuer import add_person, ensure_issuer, load_people, mint_token, person_key_path
from cli.output import console, fail
from config.settings import get_settings

app = typer.Typer(help="People and short-lived access tokens of the built-in issuer.",
                  no_args_is_help=True)


@app.command("add-person")
def add_person_command(
    subject: str = typer.Argument(..., help="The person's subject (user name), e.g. alice."),
    department: str = typer.Option(..., "--department", "-d", help="e.g. tax-bureau."),
    role: list[str] = typer.Option(..., "--role", "-r", help="A role (repeatable), e.g. tax-inspector "
                                   "or data-protection-officer."),
) -> None:
    """Register a person with the built-in issuer and give them an approval-signing key (0600)."""
    settings = get_settings()
    try:
        ensure_issuer(settings.state_dir)
        person = add_person(settings.state_dir, subject, department, role)
    except AccessError as exc:
        fail(str(exc))
    console.print(f"added {person.subject}: department {person.department}, roles "
                  f"{', '.join(person.roles)}; approval key "
                  f"{person_key_path(settings.state_dir, person.subject)} (0600)")


@app.command("list")
def list_people() -> None:
    """People registered with the built-in issuer."""
    settings = get_settings()
    try:
        people = load_people(settings.state_dir)
    except AccessError as exc:
        fail(str(exc))
    table = Table("subject", "department", "roles")
    for person in sorted(people.values(), key=lambda p: p.subject):
        table.add_row(person.subject, person.department, ", ".join(person.roles))
    console.print(table)


@app.command("token")
def token(
    subject: str = typer.Argument(..., help="A registered person."),
    ttl: int = typer.Option(900, "--ttl", min=1, max=43200, help="Lifetime in seconds."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the token to this file "
                                    "(0600) instead of standard output."),
) -> None:
    """Mint a short-lived access token for SUBJECT (needs the issuer's key).

    Use it with `attest query --token-file FILE` and `attest access ... --token-file FILE`.
    """
    settings = get_settings()
    try:
        minted = mint_token(settings.state_dir, subject, audience=settings.oidc_audience,
                            issuer=settings.oidc_issuer, ttl_s=ttl)
    except AccessError as exc:
        fail(str(exc))
    if out is None:
        print(minted)
        return
    out.unlink(missing_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(minted + "\n")
    console.print(f"token for {subject} written to {out} (valid {ttl} s)")
