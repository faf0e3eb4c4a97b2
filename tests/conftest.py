"""Session fixtures: one real embedded broker and Postgres for the whole test run.

Each session gets its own state folder, free ports and a unique topic prefix, so a test run
never touches a developer's `.attest/` stack. ``ATTEST_DATABASE_URL``, when set, points the
storage tests at that server instead of the embedded one (the broker is still embedded).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.signers_admin import provision_local_signers
from config.settings import Settings
from devstack import stack
from devstack.processes import terminate_tree
from storage import migrate
from streams.admin import ensure_topics
from tests.support.workers import start_worker, wait_until_ready


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """Settings pointing at a freshly started embedded stack, migrated to head."""
    external = os.environ.get("ATTEST_DATABASE_URL")
    # Not under pytest's basetemp: pytest deletes all but the newest three of those, and a
    # second test run on the machine would delete this one's Postgres data under it.
    state = Path(tempfile.mkdtemp(prefix="attest-test-state-"))
    base = Settings(
        state_dir=state,
        dev_kafka_port=0,
        dev_postgres_port=0,
        topic_prefix=f"t{uuid.uuid4().hex[:6]}.",
        app_id=f"attest-test-{uuid.uuid4().hex[:6]}",
        partitions=2,
        session_timeout_s=4.0,
        batch_within_s=0.1,
        registry_refresh_s=0.5,
        # Kept when a test gives itself another state folder: every process of the session
        # (workers, CLI calls) signs its audit messages with the keys registered below.
        audit_signers_dir=state / "audit-signers",
    )
    # Settings made afresh in a test (a fault stack, a scratch database) and every child
    # process find the same keys; tests/support/databases.py registers them in scratch ones.
    os.environ["ATTEST_AUDIT_SIGNERS_DIR"] = str(base.audit_signers_dir)
    info = stack.up(base)
    try:
        settings = base.model_copy(update={
            "kafka_bootstrap": info.kafka_bootstrap,
            "database_url": external or info.database_url,
        })
        migrate.upgrade(settings.database_url)
        # The audit sink chains only signed messages: register the session's worker and
        # operator audit keys (docs/audit.md), as `attest dev up` does for a developer.
        ensure_topics(settings)
        provision_local_signers(settings, "operator:pytest")
        yield settings
    finally:
        os.environ.pop("ATTEST_AUDIT_SIGNERS_DIR", None)
        stack.down(base)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(stack_settings: Settings) -> str:
    return stack_settings.database_url


@pytest.fixture(scope="module")
def worker(stack_settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``attest worker`` process for the module's tests, ready: its stages answer."""
    # One model per test worker (enrichment's): the reconciliation stage's fuzzy matching
    # uses string distance here; its model path is tested in tests/reconcile (slow).
    proc = start_worker(stack_settings, extra_env={"ATTEST_RECON_MODEL_SIMILARITY": "false"})
    try:
        wait_until_ready(proc)
        yield proc
    finally:
        terminate_tree(proc.pid, timeout_s=15)
        proc.wait(timeout=5)
