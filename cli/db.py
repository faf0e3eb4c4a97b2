"""``attest db``: schema migrations."""

from __future__ import annotations

import typer

from cli.output import console
from config.settings import get_settings
from devstack.signers import provision_embedded_signers
from storage import migrate

app = typer.Typer(help="Manage the Postgres schema (Alembic migrations).", no_args_is_help=True)


@app.command()
def upgrade(
    revision: str = typer.Argument("head", help="Target revision; 'head' is the newest."),
) -> None:
    """Apply migrations up to REVISION. Safe to run again; it only applies what is missing."""
    url = get_settings().database_url
    migrate.upgrade(url, revision)
    console.print(f"database at revision {migrate.current_revision(url)}")
    # Against the embedded stack: register its worker and operator audit keys (docs/audit.md).
    provision_embedded_signers(get_settings(), lambda m: console.print(f"[yellow]{m}[/]"))


@app.command()
def current() -> None:
    """Print the database's revision and the newest one this release knows."""
    url = get_settings().database_url
    console.print(f"current {migrate.current_revision(url) or '(empty)'}  "
                  f"head {migrate.head_revision(url)}")
