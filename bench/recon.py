"""``attest bench recon``: reconciliation quality and payments reconciled per second.

Two measurements over the same seeded finance run (three sources, the generator's mess):

* matcher only: the ``Reconciler`` fed in batches, without and with the fuzzy stage (and,
  with ``--model``, the real MiniLM's similarity), scored against the ground truth;
* end to end on the embedded stack: every event signed, sent to a fresh topic on the broker,
  consumed, verified and stored encrypted by the intake stage (a scratch database), then
  reconciled by the reconciliation stage (results and sealed state stored), without and with
  the fuzzy stage. Payments per second = payments / (first send .. last result stored).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import typer
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from config.settings import Settings, get_settings
from reconcile.config import MatchConfig
from reconcile.quality import Quality, score
from reconcile.records import record_from_payload
from reconcile.windows import Reconciler
from scenarios.finance import FinanceScenario, finance_scenario

TARGET_PRECISION, TARGET_RECALL = 0.99, 0.97


@dataclass
class Outcome:
    label: str
    seconds: float
    quality: Quality
    stage_seconds: float | None = None  # end to end: the reconciliation stage's part


def matcher_run(scenario: FinanceScenario, fuzzy: bool, similarity: Any = None, batch: int = 500) -> Outcome:
    """The matcher alone over the scenario's records, in arrival order and batches."""
    records = [record_from_payload(p, lambda a: hashlib.sha256(a.encode()).hexdigest())
               for p in scenario.payloads]
    rc = Reconciler(MatchConfig(), fuzzy=fuzzy, similarity=similarity)
    matches, breaks = [], []
    start = time.perf_counter()
    for i in range(0, len(records), batch):
        rc.add(records[i:i + batch])
        step = rc.step()
        matches += step.matches
        breaks += step.breaks
    end = rc.flush()
    seconds = time.perf_counter() - start
    return Outcome("", seconds, score(matches + end.matches, breaks + end.breaks, scenario.truth))


def _sign_all(scenario: FinanceScenario) -> tuple[list[bytes], dict[str, Any]]:
    from schemas.catalog import TRANSACTION_V1
    from security.keyfiles import generate_key
    from security.registry import KeyRecord
    from streams.producer import sign_payload

    keys = {s: generate_key(s) for s in sorted({p["source"] for p in scenario.payloads})}
    snapshot = {k.kid: KeyRecord(kid=k.kid, source=k.source, alg=k.alg, public_jwk=k.public_jwk)
                for k in keys.values()}
    return [sign_payload(keys[p["source"]], p, TRANSACTION_V1) for p in scenario.payloads], snapshot


async def end_to_end(base: Settings, scenario: FinanceScenario, tokens: list[bytes], snapshot: dict[str, Any],
                     fuzzy: bool, embed: Callable[[Sequence[str]], Awaitable[np.ndarray]] | None) -> Outcome:
    """Send, consume, verify+store (intake), reconcile+store; timed from first send to flush."""
    from agents.intake import IntakeProcessor
    from agents.messages import IncomingMessage
    from agents.reconciliation import ReconciliationStage
    from protection.fields import FieldProtector
    from protection.keyring import generate_keyring
    from protection.tiers import protection_catalog
    from schemas.catalog import TRANSACTION_V1
    from storage import migrate
    from storage.scratch import temporary_database
    from streams.admin import ensure_topics, kafka_config
    from streams.producer import OutgoingMessage, send_all
    from streams.topics import TRANSACTIONS

    settings = base.model_copy(update={"topic_prefix": f"bench-recon-{uuid.uuid4().hex[:6]}.",
                                       "recon_fuzzy": fuzzy, "recon_model_similarity": embed is not None})
    ensure_topics(settings)
    topic = TRANSACTIONS.name(settings)
    keyring = generate_keyring(protection_catalog().domains)
    with temporary_database(settings.database_url, "attest_bench") as url:
        await asyncio.to_thread(migrate.upgrade, url)
        settings = settings.model_copy(update={"database_url": url})
        intake = IntakeProcessor(settings, "bench", {topic: frozenset({TRANSACTION_V1})},
                                 protector=FieldProtector(keyring.restricted_to(())))
        intake.replace_keys(snapshot)
        stage = ReconciliationStage(settings, "bench", keyring.blind_index_key("account"), embed=embed)
        consumer = Consumer({**kafka_config(settings), "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        # Partitions assigned directly: no group join (seconds on Tansu) inside the timing.
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                         for p in range(TRANSACTIONS.partition_count(settings))])
        matches, breaks = [], []
        start = time.perf_counter()
        messages = [OutgoingMessage(p["reference"].encode(), t) for p, t in zip(scenario.payloads, tokens,
                                                                                 strict=True)]
        await asyncio.to_thread(send_all, settings, topic, messages)
        seen, in_stage = 0, 0.0
        try:
            while seen < len(tokens):
                polled = await asyncio.to_thread(consumer.consume, settings.batch_size, 1.0)
                batch = [IncomingMessage(m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                                         datetime.now(UTC)) for m in polled if not m.error()]
                if not batch:
                    continue
                seen += len(batch)
                output = await intake.process(batch)
                began = time.perf_counter()
                result = await stage.process(output.accepted)
                in_stage += time.perf_counter() - began
                matches += result.matches
                breaks += result.breaks
            began = time.perf_counter()
            end = await stage.flush()
            in_stage += time.perf_counter() - began
        finally:
            consumer.close()
        seconds = time.perf_counter() - start
    return Outcome("", seconds, score(matches + end.matches, breaks + end.breaks, scenario.truth), in_stage)


def command(
    payments: int = typer.Option(2000, "--payments", "-n", min=100, help="Payments in the seeded run."),
    seed: int = typer.Option(2026, help="Seed of the finance run."),
    mess: float = typer.Option(0.3, min=0.0, max=1.0, help="Share of messy payments."),
    model: bool = typer.Option(False, "--model/--no-model",
                               help="Also run the fuzzy stage with the real model's similarity."),
    e2e: bool = typer.Option(True, "--e2e/--no-e2e", help="Also run end to end on the embedded stack."),
) -> None:
    """Reconciliation quality (precision, recall, fuzzy stage's share and precision) and payments
    reconciled per second, with and without the fuzzy stage.

    Targets: precision >= 0.99 and recall >= 0.97. The end-to-end runs need `attest dev up`.
    """
    console = Console()
    scenario = finance_scenario(payments, seed=seed, mess=mess)
    events = len(scenario.payloads)
    rows: list[tuple[str, Outcome]] = []
    encoder = None
    if model:
        from inference.encoder import Encoder

        settings = get_settings()
        encoder = Encoder(settings.model_dir, "cpu" if settings.inference_device == "cpu" else "auto",
                          settings.inference_precision)

        cache: dict[str, np.ndarray] = {}  # the worker's pool caches by content hash too

        def similarity(pairs: Sequence[tuple[str, str]]) -> list[float]:
            new = sorted({t for pair in pairs for t in pair} - cache.keys())
            if new:
                cache.update(zip(new, encoder.encode(new), strict=True))
            return [max(0.0, min(1.0, float(cache[a] @ cache[b]))) for a, b in pairs]
    for label, fuzzy, sim in (("matcher, no fuzzy", False, None), ("matcher, fuzzy (string)", True, None),
                              *([("matcher, fuzzy (string + model)", True, similarity)] if model else [])):
        rows.append((label, matcher_run(scenario, fuzzy, sim)))
    if e2e:
        tokens, snapshot = _sign_all(scenario)
        settings = get_settings()
        for label, fuzzy in (("end to end, no fuzzy", False), ("end to end, fuzzy (string)", True)):
            rows.append((label, asyncio.run(end_to_end(settings, scenario, tokens, snapshot, fuzzy, None))))
        if encoder is not None:
            from inference.pool import ModelPool

            async def with_model() -> Outcome:
                async with ModelPool(encoder, warmup=False) as pool:
                    return await end_to_end(settings, scenario, tokens, snapshot, True,
                                            lambda texts: pool.embed(list(texts)))
            rows.append(("end to end, fuzzy (string + model)", asyncio.run(with_model())))
    table = Table(title=f"attest bench recon ({payments:,} payments, {events:,} events, seed {seed}, "
                        f"mess {mess})")
    for column in ("run", "payments/s", "stage alone", "precision", "recall", "fuzzy share",
                   "fuzzy precision", "target"):
        table.add_column(column, justify="right")
    for label, o in rows:
        q = o.quality
        fuzzy = q.by_stage.get("fuzzy", {"share": 0.0, "precision": 1.0})
        met = q.precision >= TARGET_PRECISION and q.recall >= TARGET_RECALL
        alone = f"{payments / o.stage_seconds:,.0f}/s" if o.stage_seconds else "-"
        table.add_row(label, f"{payments / o.seconds:,.0f}", alone, f"{q.precision:.4f}", f"{q.recall:.4f}",
                      f"{fuzzy['share']:.2%}", f"{fuzzy['precision']:.4f}", "met" if met else "MISSED")
    console.print(table)
