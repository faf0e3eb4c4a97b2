"""``attest produce``: sign scenario events and send them, as a producer would."""

from __future__ import annotations

from enum import StrEnum

import typer
from rich.progress import Progress

from cli.output import console, fail
from config.settings import get_settings
from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from security.keyfiles import keys_for_source
from streams.admin import ensure_topics
from streams.producer import OutgoingMessage, send_all, sign_payload, tamper
from streams.topics import TRANSACTIONS


class Scenario(StrEnum):
    finance = "finance"


def produce(
    scenario: Scenario = typer.Option(Scenario.finance, help="Which events to generate."),
    count: int = typer.Option(100, "--count", "-n", min=1, help="How many events."),
    source: str = typer.Option("core-ledger", "--source", "-s", help="Signing source."),
    tampered: int = typer.Option(
        0, "--tampered", min=0, help="How many of them to alter after signing (bad_signature)."
    ),
    seed: int | None = typer.Option(None, help="Seed for repeatable events."),
) -> None:
    """Sign COUNT scenario events with the newest local key of SOURCE and send them.

    Example: `attest produce --scenario finance --count 500 --tampered 5`.
    """
    settings = get_settings()
    keys = keys_for_source(settings.keys_dir, source)
    if not keys:
        fail(f"no local key for source {source!r}; run 'attest keys generate --source {source}'")
    if tampered > count:
        fail("--tampered cannot exceed --count")
    key = keys[0]
    ensure_topics(settings)
    payloads = transaction_payloads(count, source, seed)
    step = count // tampered if tampered else 0
    messages = []
    for i, payload in enumerate(payloads):
        token = sign_payload(key, payload, TRANSACTION_V1)
        if step and i % step == 0 and i // step < tampered:
            token = tamper(token)
        messages.append(OutgoingMessage(key=payload["reference"].encode(), value=token))
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"sending {scenario.value} events", total=count)
        sent = send_all(settings, TRANSACTIONS.name(settings), messages,
                        progress=lambda n: progress.advance(task, n))
    console.print(f"sent {sent} {scenario.value} events to {TRANSACTIONS.name(settings)} "
                  f"signed by {key.kid} ({tampered} tampered)")
