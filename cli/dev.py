"""``attest dev``: the embedded broker and Postgres for demos, tests and development."""

from __future__ import annotations

import typer

from cli.output import console
from config.settings import get_settings
from devstack import stack
from devstack.signers import provision_embedded_signers

app = typer.Typer(
    help="Run the embedded stack: the Tansu broker and a Postgres server, both from wheels.",
    no_args_is_help=True,
)


@app.command()
def up() -> None:
    """Start the embedded broker and Postgres (or reuse them) and record how to reach them.

    State lives in ATTEST_STATE_DIR (.attest/ by default). Afterwards every attest command
    finds the stack on its own; `attest dev env` prints the addresses for psql and kcat.
    """
    settings = get_settings()
    info = stack.up(settings, notice=lambda m: console.print(f"[yellow]{m}[/]"))
    console.print(f"broker   {info.kafka_bootstrap}  (pid {info.broker_pid})")
    console.print(f"postgres {info.database_url}  (pid {info.postgres_pid})")
    # The worker's and the operator's audit-signing keys (docs/audit.md), once migrated.
    provision_embedded_signers(settings, lambda m: console.print(f"[yellow]{m}[/]"), info)


@app.command()
def down() -> None:
    """Stop the embedded broker and Postgres. The broker's topics are in memory and are lost."""
    stopped = stack.down(get_settings())
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status() -> None:
    """Say whether the embedded broker and Postgres run, and where."""
    current = stack.status(get_settings())
    info = current.info
    console.print(
        f"broker   {'running' if current.broker_running else 'stopped'}"
        + (f"  {info.kafka_bootstrap}" if info and current.broker_running else "")
    )
    console.print(
        f"postgres {'running' if current.postgres_running else 'stopped'}"
        + (f"  {info.database_url}" if info and current.postgres_running else "")
    )
    if not current.running:
        raise typer.Exit(3)


@app.command()
def env() -> None:
    """Print ATTEST_KAFKA_BOOTSTRAP=... and ATTEST_DATABASE_URL=... lines.

    Use them as `eval "$(attest dev env)"`, then `psql "$ATTEST_DATABASE_URL"` or
    `kcat -b "$ATTEST_KAFKA_BOOTSTRAP" -L`.
    """
    info = stack.require_running(get_settings())
    for line in info.env_lines():
        print(line)
