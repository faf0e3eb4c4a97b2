"""A database outage holds the stream: nothing is skipped, everything lands after recovery."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

from config.settings import Settings
from devstack.postgres import start_postgres, stop_postgres
from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from security.keyfiles import generate_key
from storage import keys as registry
from storage.events import count_events
from streams.admin import ensure_topics
from streams.producer import OutgoingMessage, send_all, sign_payload
from streams.topics import TRANSACTIONS
from tests.support.waiting import wait_for, wait_until
from tests.support.workers import wait_for_key_refresh

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif("ATTEST_DATABASE_URL" in os.environ,
                       reason="stops and restarts the embedded Postgres"),
]


#: What intake logs while Postgres is away and it holds a batch (agents.retry.until_stored).
_INTAKE_RETRYING = re.compile(r"database unavailable while (checking redeliveries|storing events)")


def test_events_sent_during_an_outage_are_stored_after_it(
    stack_settings: Settings, worker: subprocess.Popen[bytes]
) -> None:
    url = stack_settings.database_url
    key = generate_key(f"outage-{uuid.uuid4().hex[:6]}")
    registry.add_key(url, key.kid, key.source, key.alg, key.public_jwk)
    ensure_topics(stack_settings)
    wait_for_key_refresh(stack_settings, key)
    warmup = transaction_payloads(1, key.source)[0]
    send_all(stack_settings, TRANSACTIONS.name(stack_settings),
             [OutgoingMessage(None, sign_payload(key, warmup, TRANSACTION_V1))])
    assert wait_until(lambda: count_events(url, [warmup["event_id"]]), bool, timeout_s=90) == 1

    pgdata = Path(stack_settings.state_dir) / "pg"
    port = urlparse(url).port
    assert port is not None
    log_path: Path = worker.log_path  # type: ignore[attr-defined]
    log_from = log_path.stat().st_size
    stop_postgres(pgdata)
    try:
        payloads = transaction_payloads(20, key.source)
        send_all(stack_settings, TRANSACTIONS.name(stack_settings),
                 [OutgoingMessage(None, sign_payload(key, p, TRANSACTION_V1)) for p in payloads])
        # The outage lasts until intake is retrying these events with backoff, holding its
        # partitions: it says so in its log.
        wait_for(lambda: _INTAKE_RETRYING.search(log_path.read_text(errors="replace")[log_from:]),
                 90, "the worker to retry storing during the outage")
        assert worker.poll() is None
    finally:
        start_postgres(pgdata, port)
    ids = [p["event_id"] for p in payloads]
    stored = wait_until(lambda: count_events(url, ids), lambda n: n == len(ids), timeout_s=120)
    assert stored == len(ids)
    assert worker.poll() is None
