"""``attest produce``: sign scenario events and send them, as a producer would."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path

import typer
from rich.progress import Progress

from cli.output import console, fail
from config.settings import Settings, get_settings
from scenarios.finance import finance_scenario, transaction_payloads
from scenarios.government import AGENCIES, consistency_scenario, document_payloads
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from security.errors import SecurityError
from security.intake_keys import load_intake_keys
from security.keyfiles import SigningKey, keys_for_source
from security.nested import seal_for_intake
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


def _intake_jwk(settings: Settings, encrypt_to: Path | None) -> dict[str, object]:
    """The public intake JWK to encrypt to: ``encrypt_to``'s, else the newest held here."""
    if encrypt_to is not None:
        try:
            jwk = json.loads(encrypt_to.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            fail(f"--encrypt-to {encrypt_to}: not a JSON file: {exc}")
        if not isinstance(jwk, dict):
            fail(f"--encrypt-to {encrypt_to}: not a JWK")
        return jwk
    try:
        newest = load_intake_keys(settings.intake_keys_dir).newest
    except SecurityError as exc:
        fail(str(exc))
    if newest is None:
        fail("no intake key here to encrypt to; run 'attest keys intake-key generate' or "
             "give --encrypt-to PUBLIC_JWK_FILE")
    return newest.public_jwk


def _send(settings: Settings, topic: str, messages: list[OutgoingMessage], label: str,
          rate: float | None) -> int:
    """Send everything, or ``rate`` messages per second in tenth-of-a-second slices."""
    slice_size = max(1, int(rate / 10)) if rate else len(messages)
    sent = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"sending {label}", total=len(messages))
        for start in range(0, len(messages), slice_size):
            began = time.monotonic()
            sent += send_all(settings, topic, messages[start:start + slice_size],
                             progress=lambda n: progress.advance(task, n))
            if rate:
                time.sleep(max(0.0, slice_size / rate - (time.monotonic() - began)))
    return sent


def produce(
    scenario: Scenario = typer.Option(Scenario.finance, help="finance: payments; government: "
                                      "tax returns and contribution records."),
    count: int = typer.Option(100, "--count", "-n", min=1,
                              help="How many events (finance with --mess/--truth: how many payments)."),
    source: str = typer.Option("core-ledger", "--source", "-s",
                               help="Signing source of plain finance events (reconciliation runs and "
                                    "government events are signed by each source's own key)."),
    tampered: int = typer.Option(
        0, "--tampered", min=0, help="How many of them to alter after signing (bad_signature)."
    ),
    seed: int | None = typer.Option(None, help="Seed for repeatable events."),
    mess: float | None = typer.Option(
        None, "--mess", min=0.0, max=1.0,
        help="Finance reconciliation run: the same payments from core-ledger, payment-switch and "
             "bank-statement, this share of them messy (typos, FX, splits, duplicates, ...). "
             "Government: COUNT people at both agencies, this share of them inconsistent.",
    ),
    truth: Path | None = typer.Option(
        None, "--truth", dir_okay=False,
        help="Write the run's ground truth (JSON) here, for `attest recon report --truth`. "
             "Implies a reconciliation run (--mess defaults to 0.2).",
    ),
    rate: float | None = typer.Option(None, "--rate", min=0.1, help="Messages per second (default: "
                                      "as fast as the broker takes them)."),
    encrypt: bool = typer.Option(
        False, "--encrypt",
        help="Send nested tokens: each signed JWS encrypted (ECDH-ES+A256KW, A256GCM) to the "
             "newest intake key held here (docs/events.md, 'Encrypted events')."),
    encrypt_to: Path | None = typer.Option(
        None, "--encrypt-to", dir_okay=False,
        help="Encrypt to this public intake JWK (from `attest keys intake-key public`); "
             "implies --encrypt."),
) -> None:
    """Sign COUNT scenario events with the newest local keys and send them.

    Examples: `attest produce --scenario finance --count 500 --tampered 5`;
    `attest produce --scenario finance --count 10000 --seed 7 --mess 0.3 --truth truth.json`
    (needs keys for core-ledger, payment-switch and bank-statement);
    `attest produce --scenario government --count 40` (needs keys for tax-bureau and
    social-security-bureau).
    """
    settings = get_settings()
    if tampered > count:
        fail("--tampered cannot exceed --count")
    topic: TopicSpec
    truth_data = None
    if scenario is Scenario.finance and (mess is not None or truth is not None):
        topic, typ = TRANSACTIONS, TRANSACTION_V1
        run = finance_scenario(count, seed, 0.2 if mess is None else mess)
        payloads, truth_data = run.payloads, run.truth
        signers = {s: _newest_key(settings, s) for s in sorted({p["source"] for p in payloads})}
    elif scenario is Scenario.finance:
        key = _newest_key(settings, source)
        topic, typ = TRANSACTIONS, TRANSACTION_V1
        payloads = transaction_payloads(count, source, seed)
        signers = {source: key}
    elif mess is not None or truth is not None:  # government consistency run: COUNT people
        topic, typ = DOCUMENTS, DOCUMENT_V1
        payloads, truth_data = consistency_scenario(count, seed, 0.1 if mess is None else mess)
        signers = {agency: _newest_key(settings, agency) for agency in AGENCIES}
    else:
        topic, typ = DOCUMENTS, DOCUMENT_V1
        payloads = document_payloads(count, seed)
        signers = {agency: _newest_key(settings, agency) for agency in AGENCIES}
    intake_jwk = _intake_jwk(settings, encrypt_to) if encrypt or encrypt_to else None
    ensure_topics(settings)
    step = len(payloads) // tampered if tampered else 0
    messages = []
    for i, payload in enumerate(payloads):
        token = sign_payload(signers[payload["source"]], payload, typ)
        if step and i % step == 0 and i // step < tampered:
            token = tamper(token)
        if intake_jwk is not None:
            try:
                token = seal_for_intake(token, intake_jwk)
            except SecurityError as exc:
                fail(str(exc))
        # The Kafka key travels in clear (and into dead letters) even when the value is
        # encrypted, so an encrypted event is keyed by its random event id, never by a
        # reference or document id it was encrypted to hide.
        key_bytes = str(payload["event_id"] if intake_jwk is not None
                        else payload.get("reference") or payload.get("document_id")).encode()
        messages.append(OutgoingMessage(key=key_bytes, value=token))
    if truth is not None and truth_data is not None:
        truth.write_text(json.dumps(truth_data, indent=1) + "\n", encoding="utf-8")
    sent = _send(settings, topic.name(settings), messages, f"{scenario.value} events", rate)
    console.print(f"sent {sent} {scenario.value} events to {topic.name(settings)} signed by "
                  f"{', '.join(k.kid for k in signers.values())} ({tampered} tampered)"
                  + (f", encrypted to {intake_jwk.get('kid')}" if intake_jwk is not None else "")
                  + (f"; truth in {truth}" if truth is not None else ""))
