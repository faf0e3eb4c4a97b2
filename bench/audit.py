"""``attest bench audit``: the chained audit log at scale, in a scratch database.

Appends go through the real path (``AuditSink.process``: parse, chain under the advisory
lock, insert, sign checkpoints) and are timed. The log is then filled to ``--rows`` with a
bulk path (hashes computed by the same function, rows sent with COPY, checkpoints signed
every ``ATTEST_AUDIT_CHECKPOINT_EVERY``), so ``verify`` checks a real chain; then query
latency (the ``attest audit query`` code path) and verify throughput are measured.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import make_url

from agents.audit_sink import AuditSink
from agents.messages import IncomingMessage
from audit.chain import hashed_view, row_hash
from audit.checkpoints import CheckpointSigner, checkpoint_body, load_or_create_service_key
from audit.log import chain_head, verify_stored_chain
from audit.queries import AuditQuery, query_records
from audit.signers import register_signers
from audit.signing import AuditSigner, sign_audit_message
from config.settings import Settings, get_settings
from schemas.audit import AUDIT_BATCH_MAX, AuditAction, AuditRecord, audit_id_for, encode_batches
from security.keyfiles import generate_key
from security.reasons import RejectReason
from storage import migrate
from storage.db import engine_for, normalise_url

ACTORS = [f"worker:node-{n}:{1000 + n}" for n in range(4)] + ["operator:alice@ops"]
SPAN = timedelta(days=30)
T0 = datetime(2026, 10, 1, tzinfo=UTC)
_COPY_COLUMNS = ("seq", "prev_hash", "row_hash", "audit_id", "time", "actor", "action", "outcome",
                 "reason", "correlation_id", "subject_ids", "source_topic", "source_partition",
                 "source_offset", "detail")


def event_id(i: int) -> str:
    return str(uuid.UUID(int=(i // 2) * 7919 + 1))


def record(i: int, total: int) -> AuditRecord:
    """Record ``i`` of ``total``: accepted/stored pairs per event, 4% rejections, 30 days."""
    event = event_id(i)
    rejected = (i // 2) % 25 == 0
    accepted = (AuditAction.EVENT_ACCEPTED, AuditAction.EVENT_STORED)[i % 2]
    action = AuditAction.EVENT_REJECTED if rejected else accepted
    return AuditRecord(
        audit_id=audit_id_for(action, event, i), time=T0 + SPAN * (i / total),
        actor=ACTORS[(i // 2) % 4] if i % 997 else ACTORS[4], action=action,
        outcome="rejected" if rejected else "ok", reason=RejectReason.BAD_SIGNATURE if rejected else None,
        correlation_id=event, subject_ids=[event, f"acct-{(i // 2) % 50_000}"],
        source_topic="attest.transactions", source_partition=(i // 2) % 4, source_offset=i // 2,
        detail={"kid": "core-ledger-20261001-ab12", "alg": "Ed25519", "typ": "attest.transaction.v1"},
    )


def _scratch(server_url: str) -> str:
    name = f"attest_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(normalise_url(server_url), isolation_level="AUTOCOMMIT",
                          poolclass=pool.NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return make_url(normalise_url(server_url)).set(database=name).render_as_string(
        hide_password=False)


def _drop(server_url: str, url: str) -> None:
    engine_for(url).dispose()
    admin = create_engine(normalise_url(server_url), isolation_level="AUTOCOMMIT",
                          poolclass=pool.NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))


#: The bench's audit signer (docs/audit.md): the sink chains only signed messages, so each
#: message is signed as an operator command signs it (one record, one signature: the worst
#: case; a worker signs one message per batch of up to 250 records).
BENCH_KEY = generate_key("audit-bench", "Ed25519")


def _messages(start: int, count: int, total: int, per_message: int = 1) -> list[IncomingMessage]:
    """Signed audit messages for records ``start``..: one record each (an operator command's
    shape), or batches of ``per_message`` (a worker's, ``--per-message 250``)."""
    now = datetime.now(UTC)
    records = [record(i, total) for i in range(start, start + count)]
    values = ([r.to_bytes() for r in records] if per_message == 1
              else encode_batches(records, per_message))
    return [IncomingMessage("attest.audit", 0, start + n, None, sign_audit_message(BENCH_KEY, v), now)
            for n, v in enumerate(values)]


async def _through_sinks(sinks: list[AuditSink], batches: list[list[IncomingMessage]]) -> int:
    """Feed batches round-robin to ``sinks`` running concurrently (one per partition)."""
    async def run(sink: AuditSink, mine: list[list[IncomingMessage]]) -> int:
        return sum([(await sink.process(batch)).stored for batch in mine])

    shares = [batches[n::len(sinks)] for n in range(len(sinks))]
    return sum(await asyncio.gather(*(run(s, b) for s, b in zip(sinks, shares, strict=True))))


def _bulk_fill(url: str, start: int, total: int, signer: CheckpointSigner, every: int) -> None:
    """Rows ``start``..``total`` with valid hashes via COPY, and a checkpoint every ``every``."""
    seq, prev = chain_head(url)
    chunk = 50_000
    raw = engine_for(url).raw_connection()
    try:
        cursor = raw.cursor()
        for first in range(start, total, chunk):
            buffer, checkpoints = io.StringIO(), []
            writer = csv.writer(buffer)
            for i in range(first, min(first + chunk, total)):
                row = record(i, total).model_dump()
                seq += 1
                digest = row_hash(hashed_view(row), prev, seq)
                writer.writerow([seq, prev, digest, row["audit_id"], row["time"].isoformat(),
                                 row["actor"], row["action"], row["outcome"], row["reason"],
                                 row["correlation_id"], "{" + ",".join(row["subject_ids"]) + "}",
                                 row["source_topic"], row["source_partition"],
                                 row["source_offset"], json.dumps(row["detail"])])
                prev = digest
                if seq % every == 0:
                    checkpoints.append((seq, seq, digest, signer.sign(checkpoint_body(seq, digest)),
                                        signer.name))
            buffer.seek(0)
            cursor.copy_expert(f"COPY audit_log ({', '.join(_COPY_COLUMNS)}) FROM STDIN "
                               "WITH (FORMAT csv)", buffer)
            cursor.executemany("INSERT INTO audit_checkpoints (last_seq, count, head_hash, "
                               "checkpoint, key_id) VALUES (%s, %s, %s, %s, %s)", checkpoints)
            raw.commit()
        cursor.execute("ANALYZE audit_log")
        raw.commit()
    finally:
        raw.close()


def _latencies(fn: Callable[[int], Any], n: int) -> tuple[float, float]:
    """(p50, p99) in milliseconds of ``fn(k)`` for k in 0..n-1."""
    samples = []
    for k in range(n):
        begin = time.perf_counter()
        fn(k)
        samples.append((time.perf_counter() - begin) * 1000)
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49], cuts[98]


def command(
    rows: Annotated[int, typer.Option("--rows", "-n", min=2000,
                                      help="Fill the scratch log to this many records.")] = 1_000_000,
    measure: Annotated[int, typer.Option(
        "--measure", min=1000, help="Records appended (and timed) through the real sink path.")] = 20_000,
    queries: Annotated[int, typer.Option("--queries", min=20, help="Queries per kind (p50/p99).")] = 200,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the scratch database afterwards.")] = False,
    per_message: Annotated[int, typer.Option(
        "--per-message", min=1, max=AUDIT_BATCH_MAX,
        help="Records per signed audit message: 1 as operator commands publish, up to 250 as a "
             "worker does (one signature per message).")] = 1,
) -> None:
    """Audit log at scale: append rate, query latency, verify rate.

    Works in a scratch database on the server of ATTEST_DATABASE_URL (or of
    the `attest dev up` stack), dropped afterwards unless --keep. A million
    rows take about four minutes on two cores; use --rows for a quick look.
    """
    base = get_settings()
    console = Console()
    url = _scratch(base.database_url)
    measure = min(measure, rows)
    try:
        migrate.upgrade(url)
        register_signers(url, [AuditSigner(BENCH_KEY.kid, "bench", BENCH_KEY.public_jwk,
                                           ("worker:*", "operator:*"))], "operator:bench")
        with tempfile.TemporaryDirectory() as state:
            settings = base.model_copy(update={"database_url": url, "state_dir": Path(state)})
            signer = CheckpointSigner(load_or_create_service_key(settings.service_key_path))
            size = settings.batch_size
            results = _run(console, settings, signer, url, rows, measure, size, queries, per_message)
        table = Table(title=f"attest bench audit ({rows:,} records, batches of {size})")
        table.add_column("measure")
        table.add_column("result", justify="right")
        for name, value in results:
            table.add_row(name, value)
        console.print(table)
    finally:
        if keep:
            console.print(f"kept scratch database {make_url(url).database}")
        else:
            _drop(base.database_url, url)


def _run(console: Console, settings: Settings, signer: CheckpointSigner, url: str, rows: int,
         measure: int, size: int, queries: int, per_message: int = 1) -> list[tuple[str, str]]:
    results: list[tuple[str, str]] = []
    half = measure // 2
    for label, sinks, first, count in (("1 sink", 1, 0, half), ("4 concurrent sinks", 4, half,
                                                                 measure - half)):
        batches = [_messages(i, min(size, first + count - i), rows, per_message)
                   for i in range(first, first + count, size)]
        group = [AuditSink(settings, actor=f"bench:{n}", signer=signer) for n in range(sinks)]
        begin = time.perf_counter()
        stored = asyncio.run(_through_sinks(group, batches))
        elapsed = time.perf_counter() - begin
        shape = "1 record" if per_message == 1 else f"{per_message} records"
        results.append((f"append via AuditSink.process, {label}, {shape} per signed message",
                        f"{stored / elapsed:,.0f} records/s"))
    console.print(f"appended {measure:,} through the sink; bulk filling to {rows:,}...")
    begin = time.perf_counter()
    _bulk_fill(url, measure, rows, signer, settings.audit_checkpoint_every)
    results.append(("bulk fill (hash + COPY, not the sink path)",
                    f"{(rows - measure) / (time.perf_counter() - begin):,.0f} records/s"))

    rng = random.Random(7)
    end = T0 + SPAN
    picks = [rng.randrange(rows) for _ in range(queries)]
    kinds: dict[str, Callable[[int], AuditQuery]] = {
        "query --subject (account)": lambda k: AuditQuery(subject=f"acct-{picks[k] % 50_000}"),
        "query --event-id": lambda k: AuditQuery(event_id=event_id(picks[k])),
        "query --actor --since 1d": lambda k: AuditQuery(actor=ACTORS[k % 4],
                                                          since=end - timedelta(days=1)),
        "query --action --since/--until (1h)": lambda k: AuditQuery(
            action=AuditAction.EVENT_REJECTED, since=T0 + SPAN * (picks[k] / rows),
            until=T0 + SPAN * (picks[k] / rows) + timedelta(hours=1)),
    }
    for name, make in kinds.items():
        p50, p99 = _latencies(lambda k, make=make: query_records(url, make(k)), queries)
        results.append((f"{name}, limit 100", f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"))

    console.print("verifying the whole chain...")
    begin = time.perf_counter()
    verdict = verify_stored_chain(url, [signer.verifier()])
    elapsed = time.perf_counter() - begin
    state = "intact" if verdict.problem is None else f"PROBLEM: {verdict.problem.message}"
    results.append(("audit verify", f"{verdict.records / elapsed:,.0f} records/s "
                                    f"({verdict.records:,} records, {verdict.checkpoints:,} "
                                    f"checkpoints, {elapsed:.1f}s, {state})"))
    return results
