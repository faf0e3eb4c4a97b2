"""Session fixtures: one real embedded broker and Postgres for the whole test run.

Each session gets its own state folder, free ports and a unique topic prefix, so a test run
never touches a developer's `.attest/` stack. ``ATTEST_DATABASE_URL``, when set, points the
storage tests at that server instead of the embedded one (the broker is still embedded).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import Settings
from devstack import stack
from devstack.processes import choose_port, terminate_tree
from storage import migrate


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
    )
    info = stack.up(base)
    try:
        settings = base.model_copy(update={
            "kafka_bootstrap": info.kafka_bootstrap,
            "database_url": external or info.database_url,
        })
        migrate.upgrade(settings.database_url)
        yield settings
    finally:
        stack.down(base)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(stack_settings: Settings) -> str:
    return stack_settings.database_url


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process exactly these settings."""
    env = dict(os.environ)
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            env.pop(f"ATTEST_{name.upper()}", None)
            continue
        env[f"ATTEST_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


@pytest.fixture(scope="module")
def worker(stack_settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``attest worker`` process for the module's tests."""
    log_path = Path(stack_settings.state_dir) / f"worker-{uuid.uuid4().hex[:6]}.log"
    env = settings_env(stack_settings)
    env["ATTEST_WORKER_WEB_PORT"] = str(choose_port(0))
    env["ATTEST_ENRICHMENT_WEB_PORT"] = str(choose_port(0))
    # One model per test worker (enrichment's): the reconciliation stage's fuzzy matching
    # uses string distance here; its model path is tested in tests/reconcile (slow).
    env["ATTEST_RECON_MODEL_SIMILARITY"] = "false"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    time.sleep(0.5)
    if proc.poll() is not None:
        pytest.fail(f"worker exited at start: {log_path.read_text()[-2000:]}")
    proc.web_port = int(env["ATTEST_WORKER_WEB_PORT"])  # type: ignore[attr-defined]
    proc.enrichment_web_port = int(env["ATTEST_ENRICHMENT_WEB_PORT"])  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        terminate_tree(proc.pid, timeout_s=15)
        proc.wait(timeout=5)
