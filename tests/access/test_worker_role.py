"""A real worker runs as `attest_worker` (a member of the writer role `attest_app` only).

It verifies, stores, classifies and audits through every stage without a permission error,
and the same login can read no ciphertext, no wrapped key and no subject reference.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from audit.queries import find_records
from config.settings import Settings
from devstack.processes import terminate_tree
from devstack.stack import read_stack
from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from security.keyfiles import generate_key
from storage import keys as registry
from storage.db import normalise_url
from storage.events import count_events
from streams.admin import ensure_topics
from streams.producer import OutgoingMessage, send_all, sign_payload
from streams.topics import TRANSACTIONS
from tests.support.databases import scratch_database
from tests.support.waiting import wait_until
from tests.support.workers import start_worker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker_db(stack_settings: Settings) -> Iterator[tuple[Settings, str]]:
    """A scratch database, and settings whose database URL is the worker login's on it."""
    if os.environ.get("ATTEST_DATABASE_URL"):
        pytest.skip("the session runs against an external Postgres, not the embedded one")
    info = read_stack(stack_settings)
    assert info is not None and info.worker_database_url
    with scratch_database(stack_settings.database_url, "attest_worker_role") as owner_url:
        name = make_url(normalise_url(owner_url)).database
        worker_url = make_url(normalise_url(info.worker_database_url)).set(
            database=name).render_as_string(hide_password=False)
        own = stack_settings.model_copy(update={
            "database_url": owner_url, "topic_prefix": f"w{uuid.uuid4().hex[:6]}.",
            "app_id": f"attest-worker-role-{uuid.uuid4().hex[:6]}", "partitions": 1})
        yield own, worker_url


@pytest.mark.slow  # needs the worker's MiniLM model (enrichment)
def test_a_worker_runs_every_stage_as_the_writer_role(worker_db: tuple[Settings, str],
                                                       tmp_path: Path) -> None:
    own, worker_url = worker_db
    ensure_topics(own)
    key = generate_key(f"ledger-{uuid.uuid4().hex[:6]}")
    registry.add_key(own.database_url, key.kid, key.source, key.alg, key.public_jwk)
    log = tmp_path / "worker.log"
    proc = start_worker(own.model_copy(update={"database_url": worker_url}), log)
    try:
        payloads = transaction_payloads(10, key.source)
        send_all(own, TRANSACTIONS.name(own), [
            OutgoingMessage(key=p["reference"].encode(), value=sign_payload(key, p, TRANSACTION_V1))
            for p in payloads])
        actions = wait_until(
            lambda: Counter(r.action for r in find_records(own.database_url, limit=10_000)),
            lambda c: c["event.inferred"] >= 10 or proc.poll() is not None, timeout_s=180)
        assert proc.poll() is None, log.read_text()[-3000:]
        assert actions["event.accepted"] == actions["event.stored"] == actions["event.inferred"] == 10
        assert count_events(own.database_url) == 10
    finally:
        terminate_tree(proc.pid, timeout_s=15)
    assert "permission denied" not in log.read_text()


def test_the_worker_login_reads_no_ciphertext_key_or_subject(worker_db: tuple[Settings, str]) -> None:
    _, worker_url = worker_db
    engine = create_engine(normalise_url(worker_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar() == "attest_worker"
        for statement in ("SELECT subject_ref FROM data_keys", "SELECT wrapped FROM data_keys",
                          "SELECT sealed FROM tier_wrapping_keys", "SELECT amount FROM transaction_fields",
                          "SELECT income FROM document_fields", "UPDATE audit_log SET actor = actor",
                          "SELECT * FROM access_requests"):
            with pytest.raises(ProgrammingError, match="permission denied"), engine.begin() as conn:
                conn.execute(text(statement))
    finally:
        engine.dispose()
