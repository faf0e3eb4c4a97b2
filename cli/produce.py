"""``attest produce``: sign scenario events and send them, as a producer would."""

from __future__ import annotations

from enum import StrEnum

import typer
from rich.progress import Progress

from cli.output import console, fail
from config.settings import Settings, get_settings
from scenarios.finance import transaction_payloads
from scenarios.government import AGENCIES, document_payloads
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from security.keyfiles import SigningKey, keys_for_source
from streams.admin import ensure_topics
from streams.producer import OutgoingMessage, send_all, sign_payload, tamper
from streams.topics import DOCUMENTS, TRANSACTIONS, TopicSpec


class Scenario(StrEnum):
    finance = "finance"
    government = "government"


def _newest_key(settings: Settings, source: str) -> SigningKey:
    keys = keys_for_source(settings.keys_dir, source)
    if not keys:
        fail(f"no local key for source {source!r}; run 'attest keys generate --source {source}'")
    return keys[0]


def produce(
    scenario: Scenario = typer.Option(Scenario.finance, help="finance: payments; government: "
                                      "tax returns and contribution records."),
    count: int = typer.Option(100, "--count", "-n", min=1, help="How many events."),
    source: str = typer.Option("core-ledger", "--source", "-s",
                               help="Signing source of finance events (government events are "
                                    "signed by each agency's own key)."),
    tampered: int = typer.Option(
        0, "--tampered", min=0, help="How many of them to alter after signing (bad_signature)."
    ),
    seed: int | None = typer.Option(None, help="Seed for repeatable events."),
) -> None:
    """Sign COUNT scenario events with the newest local keys and send them.

    Examples: `attest produce --scenario finance --count 500 --tampered 5`;
    `attest produce --scenario government --count 40` (needs keys for tax-bureau and
    social-security-bureau).
    """
    settings = get_settings()
    if tampered > count:
        fail("--tampered cannot exceed --count")
    topic: TopicSpec
    if scenario is Scenario.finance:
        key = _newest_key(settings, source)
        topic, typ = TRANSACTIONS, TRANSACTION_V1
        payloads = transaction_payloads(count, source, seed)
        signers = {source: key}
    else:
        topic, typ = DOCUMENTS, DOCUMENT_V1
        payloads = document_payloads(count, seed)
        signers = {agency: _newest_key(settings, agency) for agency in AGENCIES}
    ensure_topics(settings)
    step = count // tampered if tampered else 0
    messages = []
    for i, payload in enumerate(payloads):
        token = sign_payload(signers[payload["source"]], payload, typ)
        if step and i % step == 0 and i // step < tampered:
            token = tamper(token)
        key_bytes = str(payload.get("reference") or payload.get("document_id")).encode()
        messages.append(OutgoingMessage(key=key_bytes, value=token))
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"sending {scenario.value} events", total=count)
        sent = send_all(settings, topic.name(settings), messages,
                        progress=lambda n: progress.advance(task, n))
    console.print(f"sent {sent} {scenario.value} events to {topic.name(settings)} signed by "
                  f"{', '.join(k.kid for k in signers.values())} ({tampered} tampered)")
