"""``attest bench e2e``: the whole pipeline, measured from outside, against its slowest part.

Backlog mode: N signed events are produced before a worker starts, then one ``attest
worker --role intake,audit`` (no model: enrichment has its own consumer group) drains them;
throughput is counted on the database's clock, from the first to the last stored row
(start-up excluded), and the audit trail is waited for too. Load mode: concurrent
producers offer fixed rates to a running worker; latency is measured from ``issued_at`` to
the committed row and to its audit record. The same run measures ``bench verify``'s full
path, so the ratio e2e / verify says what the pipeline costs beyond the one part no design
can avoid. Each run gets its own topics and consumer groups on the stack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil
from sqlalchemy import text

from bench.verify import measure as measure_verify
from config.settings import Settings
from devstack.processes import choose_port, terminate_tree
from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from security.keyfiles import generate_key
from storage import keys as registry
from storage.db import engine_for
from streams.admin import ensure_topics
from streams.producer import OutgoingMessage, send_all, sign_payload
from streams.topics import TRANSACTIONS

#: The reference system's published table: concurrent clients -> (ops/s, avg ms, p99 ms),
#: on three 8-core nodes.
REFERENCE = {10: (1250, 8.2, 15.3), 50: (4680, 10.7, 22.1), 100: (5120, 19.4, 41.6)}
RESULTS = Path(__file__).parent / "results"


@dataclass
class BacklogResult:
    events: int
    stored: int
    seconds: float
    events_per_s: float
    audit_records: int
    audit_seconds: float
    audit_per_s: float
    verify_full_per_s: float
    ratio_to_verify: float
    rss_start_mib: float
    rss_end_mib: float
    batch_size: int
    partitions: int
    workers: int = 1
    #: How intake read its topics (ATTEST_INTAKE_CONSUMER): batch, or the faust baseline.
    intake_consumer: str = "batch"
    cpu_count: int = field(default_factory=lambda: os.cpu_count() or 1)
    enrichment: EnrichmentResult | None = None


@dataclass
class EnrichmentResult:
    """The enrichment stage draining the classifications of a stored backlog, cache off.

    Compared with the model's own limit measured in the same run (``offline_pass``: a
    plain loop over full batches, no pool, no Kafka, no database), so the ratio says what
    the stage around the model costs. The cache is off in both, so model work is compared
    with model work: the scenario's repeated names would otherwise let the stage beat the
    model's limit and say nothing.
    """

    classified: int
    seconds: float
    per_s: float
    offline_limit_per_s: float
    ratio: float
    max_batch: int


def bench_settings(settings: Settings, tag: str) -> Settings:
    """Topics and a consumer group of this run's own, on the same broker and database."""
    return settings.model_copy(update={
        "topic_prefix": f"bench{tag}.", "app_id": f"bench-e2e-{tag}",
    })


def worker_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is not None:
            env[f"ATTEST_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    env["ATTEST_WORKER_WEB_PORT"] = str(choose_port(0))
    env["ATTEST_ENRICHMENT_WEB_PORT"] = str(choose_port(0))
    return env


def _rss_mib(processes: list[subprocess.Popen[bytes]]) -> float:
    """Resident memory of the workers and every stage process under them."""
    total = 0
    for proc in processes:
        try:
            root = psutil.Process(proc.pid)
            total += sum(p.memory_info().rss for p in [root, *root.children(True)])
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def start_worker(settings: Settings, role: str, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "cli.main", "worker", "--role", role],
                                env=worker_env(settings), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _window(url: str, query: str, params: dict[str, str]) -> tuple[int, float]:
    """(rows, seconds from the first to the last) of a ``count, min, max`` query, db clock."""
    with engine_for(url).connect() as conn:
        n, first, last = conn.execute(text(query), params).one()
    return int(n), (last - first).total_seconds() if n else 0.0


def _stored_window(url: str, source: str) -> tuple[int, float]:
    """Events stored for ``source``."""
    return _window(url, "SELECT count(*), min(stored_at), max(stored_at) FROM events "
                        "WHERE source = :s", {"s": source})


def _audit_window(url: str, topic: str) -> tuple[int, float]:
    """Audit records of messages read from ``topic``."""
    return _window(url, "SELECT count(*), min(recorded_at), max(recorded_at) FROM audit_log "
                        "WHERE source_topic = :t", {"t": topic})


def produce(settings: Settings, source: str, count: int, chunk: int = 5000) -> None:
    key = generate_key(source)
    registry.add_key(settings.database_url, key.kid, key.source, key.alg, key.public_jwk)
    topic = TRANSACTIONS.name(settings)
    sent = 0
    while sent < count:
        n = min(chunk, count - sent)
        payloads = transaction_payloads(n, key.source, seed=sent)
        for i, p in enumerate(payloads):  # seeded generators repeat ids across chunks
            p["event_id"] = str(uuid.UUID(int=uuid.uuid4().int ^ i, version=4))
        send_all(settings, topic, [OutgoingMessage(p["reference"].encode(),
                                                   sign_payload(key, p, TRANSACTION_V1))
                                   for p in payloads])
        sent += n


def min_backlog(settings: Settings) -> int:
    """The smallest backlog whose drain spans at least three committed batches."""
    return 2 * settings.batch_size + 1


def _classified_window(url: str, source: str) -> tuple[int, float]:
    """Events of ``source`` classified."""
    return _window(url, "SELECT count(*), min(i.created_at), max(i.created_at) FROM inferences i "
                        "JOIN events e ON e.event_id = i.event_id WHERE e.source = :s",
                   {"s": source})


def offline_limit(settings: Settings, texts: int = 1024) -> float:
    """The model's own batched limit on this machine now (texts/s, best of two passes)."""
    from bench.inference import _in_worker_thread, offline_pass, scenario_texts
    from inference.encoder import Encoder

    encoder = _in_worker_thread(lambda: Encoder(
        settings.model_dir, settings.inference_device, settings.inference_precision,
        settings.inference_threads))
    sample = scenario_texts(texts)
    return max(_in_worker_thread(offline_pass, encoder, sample, settings.inference_max_batch)[0]
               for _ in range(2))


def run_enrichment(run: Settings, source: str, stored: int, tag: str, timeout_s: float,
                   say: Callable[[str], object] = print) -> EnrichmentResult:
    """Start an enrichment worker on the stored backlog and time its results (db clock)."""
    classify = run.model_copy(update={"inference_cache_size": 0})
    log_path = Path(run.state_dir) / f"bench-e2e-{tag}-enrichment.log"
    say(f"starting an enrichment worker, cache off (log {log_path}) ...")
    proc = start_worker(classify, "enrichment", log_path)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _classified_window(run.database_url, source)[0] >= stored:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"the enrichment worker exited; see {log_path}")
            time.sleep(1.0)
        classified, seconds = _classified_window(run.database_url, source)
    finally:
        terminate_tree(proc.pid, timeout_s=15)
    say("measuring the model's offline limit in the same run ...")
    # The ratio is taken from the two figures as reported, so a reader who divides them
    # gets the same ratio (CI once saw 2.027 against 716.3 / 353.5 = 2.026).
    limit = round(offline_limit(run), 1)
    rate = round(classified / seconds, 1) if seconds else 0.0
    return EnrichmentResult(
        classified=classified, seconds=round(seconds, 3), per_s=rate,
        offline_limit_per_s=limit, ratio=round(rate / limit, 3) if limit else 0.0,
        max_batch=run.inference_max_batch)


def run_backlog(settings: Settings, events: int, timeout_s: float,
                say: Callable[[str], object] = print, *, workers: int = 1,
                enrichment: bool = False, intake_consumer: str | None = None) -> BacklogResult:
    """Produce ``events``, then drain them with ``workers`` intake workers in one group.

    The first worker also runs the audit stage; the others run intake alone, as a second
    machine would. With ``enrichment`` an enrichment worker then classifies the stored
    backlog (see ``run_enrichment``).
    """
    tag = uuid.uuid4().hex[:6]
    run = bench_settings(settings, tag)
    if intake_consumer is not None:
        run = run.model_copy(update={"intake_consumer": intake_consumer})
    if events < min_backlog(run):
        # stored_at is the transaction's start time, so a backlog that fits in one or two
        # batches has no measurable first-to-last window (CI saw 300 events in 0.0 s).
        raise ValueError(f"a backlog of {events:,} fits in too few batches of {run.batch_size} "
                         f"to time; use --events {min_backlog(run):,} or more")
    if not 1 <= workers <= run.partitions:
        raise ValueError(f"{workers} intake workers cannot share {run.partitions} partitions; "
                         f"use 1 to {run.partitions} (ATTEST_PARTITIONS sets the partitions)")
    source = f"bench-{tag}"
    ensure_topics(run)
    say(f"producing {events:,} signed events to {TRANSACTIONS.name(run)} ...")
    produce(run, source, events)
    log_path = Path(settings.state_dir) / f"bench-e2e-{tag}.log"
    say(f"starting {workers} intake worker{'s' if workers > 1 else ''} (log {log_path}) "
        "and draining ...")
    procs = [start_worker(run, "intake,audit" if i == 0 else "intake", log_path)
             for i in range(workers)]
    rss: list[float] = []
    try:
        deadline = time.monotonic() + timeout_s
        stored = 0
        while time.monotonic() < deadline:
            stored, _ = _stored_window(run.database_url, source)
            rss.append(_rss_mib(procs))
            if stored >= events:
                break
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a worker exited; see {log_path}")
            time.sleep(0.5)
        stored, seconds = _stored_window(run.database_url, source)
        expected_audit = 2 * stored
        audited, audit_seconds = 0, 0.0
        while time.monotonic() < deadline:
            audited, audit_seconds = _audit_window(run.database_url, TRANSACTIONS.name(run))
            if audited >= expected_audit:
                break
            time.sleep(0.5)
    finally:
        for proc in procs:
            terminate_tree(proc.pid, timeout_s=15)
    enriched = (run_enrichment(run, source, stored, tag, timeout_s, say)
                if enrichment and stored else None)
    say("measuring bench verify's full path in the same run ...")
    verify_full, _ = measure_verify("Ed25519", 5000, 3)
    rate = stored / seconds if seconds else 0.0
    return BacklogResult(
        events=events, stored=stored, seconds=round(seconds, 3), events_per_s=round(rate, 1),
        audit_records=audited, audit_seconds=round(audit_seconds, 3),
        audit_per_s=round(audited / audit_seconds, 1) if audit_seconds else 0.0,
        verify_full_per_s=round(verify_full, 1),
        ratio_to_verify=round(rate / verify_full, 3) if verify_full else 0.0,
        rss_start_mib=round(rss[0] if rss else 0.0, 1), rss_end_mib=round(rss[-1] if rss else 0.0, 1),
        batch_size=run.batch_size, partitions=run.partitions, workers=workers,
        intake_consumer=run.intake_consumer, enrichment=enriched,
    )


@dataclass
class LoadResult:
    """One offered rate from ``clients`` clients. ``achieved_per_s``: the offered events
    stored, over the longer of the offering time and the time from the first to the last of
    them stored (db clock), so a worker that fell behind shows the rate it drained at."""

    clients: int
    offered_per_s: float
    sent: int
    stored: int
    achieved_per_s: float
    stored_p50_ms: float
    stored_p95_ms: float
    stored_p99_ms: float
    stored_max_ms: float
    audit_p50_ms: float
    audit_p99_ms: float


def _offer(settings: Settings, key: object, clients: int, rate: float, seconds: float) -> int:
    """``clients`` threads, each sending its share of ``rate`` events/s for ``seconds``."""
    from confluent_kafka import Producer

    from streams.producer import producer_config

    topic = TRANSACTIONS.name(settings)
    counts = [0] * clients
    # Every client connected (metadata, idempotent producer id) before the first event is
    # issued: a long-lived client does not pay that per event, and it would otherwise show as
    # a second of latency at the start of every run.
    connected = threading.Barrier(clients)

    def client(index: int) -> None:
        producer = Producer(producer_config(settings))
        producer.list_topics(topic, timeout=30)
        connected.wait(60)
        interval = clients / rate
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            due = start + n * interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            payload = transaction_payloads(1, key.source)[0]  # type: ignore[attr-defined]
            payload["event_id"] = str(uuid.uuid4())
            producer.produce(topic, sign_payload(key, payload, TRANSACTION_V1))  # type: ignore[arg-type]
            producer.poll(0)
            n += 1
        producer.flush(30)
        counts[index] = n

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def _latencies(url: str, source: str, topic: str,
               warm_up: str) -> tuple[list[float], list[float]]:
    """Milliseconds from issued_at to the committed row, and to the event.stored record, of
    the offered events (not the warm-up event, which waited for the worker to join)."""
    with engine_for(url).connect() as conn:
        stored = [float(r[0]) for r in conn.execute(text(
            "SELECT extract(epoch FROM stored_at - issued_at) * 1000 FROM events "
            "WHERE source = :s AND event_id::text <> :w"
        ), {"s": source, "w": warm_up})]
        audited = [float(r[0]) for r in conn.execute(text(
            "SELECT extract(epoch FROM a.recorded_at - e.issued_at) * 1000 FROM audit_log a "
            "JOIN events e ON a.correlation_id = e.event_id::text "
            "WHERE e.source = :s AND a.action = 'event.stored' AND a.source_topic = :t "
            "AND e.event_id::text <> :w"
        ), {"s": source, "t": topic, "w": warm_up})]
    return stored, audited


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def run_load(settings: Settings, clients: int, rate: float, seconds: float,
             say: Callable[[str], object] = print) -> LoadResult:
    tag = uuid.uuid4().hex[:6]
    run = bench_settings(settings, tag)
    ensure_topics(run)
    key = generate_key(f"load-{tag}")
    registry.add_key(run.database_url, key.kid, key.source, key.alg, key.public_jwk)
    log_path = Path(settings.state_dir) / f"bench-e2e-{tag}.log"
    proc = start_worker(run, "intake,audit", log_path)
    try:
        # Warm-up: the worker has joined and stored one event before the clock starts.
        produce_one = transaction_payloads(1, key.source)[0]
        send_all(run, TRANSACTIONS.name(run), [OutgoingMessage(None, sign_payload(
            key, produce_one, TRANSACTION_V1))])
        deadline = time.monotonic() + 120
        while _stored_window(run.database_url, key.source)[0] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        say(f"offering {rate:,.0f} events/s from {clients} clients for {seconds:.0f}s ...")
        sent = _offer(run, key, clients, rate, seconds) + 1
        deadline = time.monotonic() + 120
        while _stored_window(run.database_url, key.source)[0] < sent and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)  # the last batch's audit records
        stored_ms, audit_ms = _latencies(run.database_url, key.source, TRANSACTIONS.name(run),
                                         str(produce_one["event_id"]))
        stored = _stored_window(run.database_url, key.source)[0]  # the warm-up event too
        drained_s = _window(run.database_url, "SELECT count(*), min(stored_at), max(stored_at) "
                            "FROM events WHERE source = :s AND event_id::text <> :w",
                            {"s": key.source, "w": str(produce_one["event_id"])})[1]
    finally:
        terminate_tree(proc.pid, timeout_s=15)
    return LoadResult(
        clients=clients, offered_per_s=rate, sent=sent, stored=stored,
        achieved_per_s=round(len(stored_ms) / max(seconds, drained_s), 1),
        stored_p50_ms=_pct(stored_ms, 0.50), stored_p95_ms=_pct(stored_ms, 0.95),
        stored_p99_ms=_pct(stored_ms, 0.99), stored_max_ms=_pct(stored_ms, 1.0),
        audit_p50_ms=_pct(audit_ms, 0.50), audit_p99_ms=_pct(audit_ms, 0.99),
    )


def write_results(kind: str, results: list[object]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"e2e-{kind}-{stamp}.json"
    path.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")  # type: ignore[call-overload]
    return path


def write_chart(results: list[LoadResult], path: Path) -> Path:
    """Latency (p50, p99 from issued_at to the committed row) against achieved throughput."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file is the output
    import matplotlib.pyplot as plt

    ordered = sorted(results, key=lambda r: r.achieved_per_s)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = [r.achieved_per_s for r in ordered]
    ax.plot(x, [r.stored_p50_ms for r in ordered], "o-", label="Attest p50")
    ax.plot(x, [r.stored_p99_ms for r in ordered], "s-", label="Attest p99")
    for r in ordered:
        ax.annotate(f"{r.clients} clients", (r.achieved_per_s, r.stored_p99_ms),
                    textcoords="offset points", xytext=(4, 4), fontsize=8)
    ref = sorted(REFERENCE.items())
    ax.plot([v[0] for _, v in ref], [v[2] for _, v in ref], "^--", color="grey",
            label="reference p99 (3 x 8 cores)")
    ax.set_xlabel("events/s stored")
    ax.set_ylabel("ms from issued_at to committed row")
    ax.set_title("attest bench e2e: latency against throughput")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def backlog_label(backlog: BacklogResult) -> str:
    """'1 intake worker', '2 intake workers', '1 intake worker (Faust stream, baseline)'."""
    label = f"{backlog.workers} intake worker{'s' if backlog.workers > 1 else ''}"
    return label + (" (Faust stream, baseline)" if backlog.intake_consumer == "faust" else "")


def markdown_table(backlogs: list[BacklogResult], load: list[LoadResult]) -> str:
    """The tables docs/performance.md carries, generated from a run's own results.

    One column per backlog run (1, 2, ... intake workers), so what a second worker adds is
    read across a row.
    """
    lines = []
    if backlogs:
        def row(name: str, cell: Callable[[BacklogResult], str]) -> str:
            return f"| {name} | " + " | ".join(cell(b) for b in backlogs) + " |"

        lines += [
            "| measure | " + " | ".join(backlog_label(b) for b in backlogs) + " |",
            "| --- |" + " --- |" * len(backlogs),
            row("backlog drained (events)", lambda b: f"{b.stored:,} of {b.events:,}"),
            row("stored events/s (db clock)", lambda b: f"{b.events_per_s:,.0f}"),
            row("audit records/s", lambda b: f"{b.audit_per_s:,.0f}"),
            row("bench verify full path, same run (events/s, one core)",
                lambda b: f"{b.verify_full_per_s:,.0f}"),
            row("e2e / verify", lambda b: f"{b.ratio_to_verify:.2f}"),
            row("worker RSS start -> end (MiB)",
                lambda b: f"{b.rss_start_mib:.0f} -> {b.rss_end_mib:.0f}"),
        ]
        enriched = [b.enrichment for b in backlogs if b.enrichment]
        for e in enriched:
            lines += [
                f"| enrichment: events classified/s (cache off, batches of {e.max_batch}) "
                f"| {e.per_s:,.0f} ({e.classified:,} in {e.seconds:.1f} s) |"
                + " |" * (len(backlogs) - 1),
                f"| model offline limit, same run (texts/s) | {e.offline_limit_per_s:,.0f} |"
                + " |" * (len(backlogs) - 1),
                f"| enrichment / offline limit | {e.ratio:.0%} |" + " |" * (len(backlogs) - 1),
            ]
        lines.append("")
    if load:
        lines += ["| clients | offered/s | achieved/s | stored p50 / p95 / p99 / max ms | "
                  "audit p50 / p99 ms | reference ops/s (avg / p99 ms) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in load:
            ref = REFERENCE.get(r.clients)
            lines.append(
                f"| {r.clients} | {r.offered_per_s:,.0f} | {r.achieved_per_s:,.0f} | "
                f"{r.stored_p50_ms} / {r.stored_p95_ms} / {r.stored_p99_ms} / {r.stored_max_ms} | "
                f"{r.audit_p50_ms} / {r.audit_p99_ms} | "
                + (f"{ref[0]:,} ({ref[1]} / {ref[2]}) |" if ref else "- |"))
    return "\n".join(lines) + "\n"
