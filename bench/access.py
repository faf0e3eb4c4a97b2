"""``attest bench access``: reads per second through the access service, against raw decryption.

One run, one scratch database on the configured server, one temporary state folder:

* the baseline: the same rows' fields opened in-process (``FieldReader``, a fresh reader per
  record, so each record pays its wrapping-key and data-key unwrapping as a service read does),
  no HTTP, no audit, no policy;
* the service: ``attest serve`` in a subprocess (as deployed), driven over HTTP by 1 and then
  10 concurrent clients, each read being one record by event id (a payments analyst's five
  level-1 transaction fields), each read authenticated, decided, fetched under the department
  role, audited (appended and committed to the hash chain) and only then decrypted.

Prints reads/s and p50/p99 latency per concurrency, and the service's rate as a share of the
raw decrypt rate.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import ProgrammingError

from access.issuer import add_person, mint_token
from access.keys import ensure_local_keys
from access.policy import AccessDecision, AccessReason, load_policy
from cli.output import fail
from config.settings import Settings, get_settings
from devstack.processes import choose_port, terminate_tree
from protection.fields import writer_protector
from protection.keyring_sources import open_keyring
from protection.reader import FieldReader
from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from storage import migrate
from storage.events import StoredEvent, store_events
from storage.protected import RowFilter, read_protected
from storage.scratch import temporary_database

ROLE = "payments-analyst"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def raw_decrypt_rate(url: str, state: Path, limit: int) -> tuple[float, int]:
    """Records/s (and fields per record) opening the stored rows with a fresh reader each."""
    policy = load_policy("finance")
    role = policy.role(ROLE)
    schema = policy.catalog.schema(TRANSACTION_V1)
    columns = [name for (typ, name), level in role.fields.items() if typ == TRANSACTION_V1 and level == 1]
    rows, keys = read_protected(url, db_role=policy.department_of(role).db_role, schema=schema,
                                columns=columns, where=RowFilter(limit=limit),
                                key_ids_of=FieldReader.key_ids)
    keyring = open_keyring(state, {})
    allow = {n: AccessDecision(schema.field(n), ROLE, True, AccessReason.GRANTED, 1) for n in columns}
    start = time.perf_counter()
    for row in rows:
        FieldReader(keyring, policy.catalog).open_fields(TRANSACTION_V1, row.event_id,
                                                          row.ciphertexts, allow, keys,
                                                          department=row.department)
    return len(rows) / (time.perf_counter() - start), len(columns)


@contextmanager
def serving(settings: Settings, url: str, state: Path) -> Iterator[str]:
    """``attest serve`` in a subprocess on a free port; yields its base URL."""
    port = choose_port(0)
    env = {**os.environ, "ATTEST_STATE_DIR": str(state), "ATTEST_DATABASE_URL": url,
           "ATTEST_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "ATTEST_ACCESS_POLICIES": "finance",
           "ATTEST_ACCESS_LOOKUPS_PER_MINUTE": "100000"}
    env = {k: v for k, v in env.items() if not k.startswith(("ATTEST_KEK_", "ATTEST_BLIND_INDEX_",
                                                              "ATTEST_OIDC_"))}
    log = (state / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"attest serve exited: {(state / 'serve.log').read_text()[-500:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield base
    finally:
        terminate_tree(proc.pid, timeout_s=10)
        log.close()


def drive(base: str, token: str, event_ids: list[str], clients: int, reads: int) -> tuple[float, list[float]]:
    """``reads`` reads spread over ``clients`` threads; returns (reads/s, latencies in s)."""
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []
    per_client = reads // clients

    def run(offset: int) -> None:
        own: list[float] = []
        with httpx.Client(base_url=base, timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as http:
            for i in range(per_client):
                event_id = event_ids[(offset * per_client + i) % len(event_ids)]
                start = time.perf_counter()
                response = http.post("/v1/reads", json={"purpose": "bench", "event_id": event_id})
                own.append(time.perf_counter() - start)
                if response.status_code != 200 or not response.json()["records"]:
                    errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                    return
        with lock:
            latencies.extend(own)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(errors[0])
    return len(latencies) / elapsed, latencies


def command(
    rows: int = typer.Option(500, "--rows", "-n", min=10, help="Transactions stored and read."),
    reads: int = typer.Option(400, "--reads", min=10, help="Reads per concurrency level."),
    concurrency: str = typer.Option("1,10", help="Comma-separated numbers of concurrent clients."),
) -> None:
    """Reads/s and p50/p99 through `attest serve` at 1 and 10 clients, against raw decrypts/s.

    Needs the database (`attest dev up`); uses a scratch database and a temporary state folder
    (keys, issuer, a payments analyst), both removed afterwards.
    """
    console = Console()
    settings = get_settings()
    levels = [int(c) for c in concurrency.split(",") if c.strip()]
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="attest-bench-access-") as tmp, \
                temporary_database(settings.database_url, "attest_bench_access") as url:
            state = Path(tmp)
            migrate.upgrade(url)
            ensure_local_keys(state)
            add_person(state, "bench-analyst", "treasury", [ROLE])
            payloads = transaction_payloads(rows, "core-ledger", seed=7)
            now = datetime.now(UTC)
            events = [StoredEvent(event_id=p["event_id"], typ=TRANSACTION_V1, source=p["source"],
                                  kid="bench", topic=f"bench.{uuid.uuid4().hex[:6]}", partition=0,
                                  offset=i, issued_at=now, received_at=now, verified_at=now,
                                  payload=p) for i, p in enumerate(payloads)]
            store_events(url, events, protector=writer_protector(state, {}))
            raw, fields = raw_decrypt_rate(url, state, rows)
            token = mint_token(state, "bench-analyst", audience=settings.oidc_audience,
                               issuer=settings.oidc_issuer, ttl_s=3600)
            ids = [p["event_id"] for p in payloads]
            with serving(settings, url, state) as base:
                drive(base, token, ids, 1, min(20, reads))  # warm-up
                for clients in levels:
                    rate, latencies = drive(base, token, ids, clients, reads)
                    results.append((clients, rate, latencies))
    except ProgrammingError as exc:
        fail(f"the benchmark needs a scratch database on {settings.database_url} "
             f"(CREATE DATABASE was refused: {str(exc.orig).strip().splitlines()[0]})")
    except RuntimeError as exc:
        fail(str(exc))

    table = Table(title=f"attest bench access ({rows:,} transactions, {fields} fields per record, "
                        f"{reads:,} reads per level)")
    for column in ("measure", "reads/s", "p50 ms", "p99 ms", "share of raw decrypt"):
        table.add_column(column, justify="right" if column != "measure" else "left")
    table.add_row("raw decrypt (in-process, no HTTP/audit)", f"{raw:,.0f}", "", "", "100%")
    for clients, rate, latencies in results:
        table.add_row(f"service, {clients} client{'s' if clients > 1 else ''}", f"{rate:,.0f}",
                      f"{statistics.median(latencies) * 1000:.1f}",
                      f"{_percentile(latencies, 0.99) * 1000:.1f}", f"{rate / raw:.1%}")
    console.print(table)
    console.print("Each service read: token check, policy, SELECT under the department role, "
                  "one audit append committed (serialized by the chain's lock), then decryption.")
