"""Fixtures of the fault-injection suite: a stack of its own and one fresh run per test.

Each test gets its own database (so the events table, the dead letters and the audit chain
hold only that test's messages), its own topic prefix and consumer group, a registered
signing key, and a factory of worker processes that are always stopped afterwards.
The seed of the random kill points is printed on failure; ATTEST_FAULTS_SEED repeats it.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from audit.signers_admin import provision_local_signers
from config.settings import Settings
from streams.admin import ensure_topics
from tests.faults.checks import Outcome, observe
from tests.faults.stack import FaultStack
from tests.faults.workers import WorkerProcess
from tests.faults.workload import Planned, Signers, Workload
from tests.support.databases import scratch_database
from tests.support.waiting import wait_until


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the fault stack is a `faults` test (`make test-faults`)."""
    for item in items:
        if "fault_stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def fault_stack() -> Iterator[FaultStack]:
    stack = FaultStack(Path(tempfile.mkdtemp(prefix="attest-faults-")))
    try:
        stack.start()
        yield stack
    finally:
        stack.close()
        if os.environ.get("ATTEST_FAULTS_KEEP"):
            print(f"\nfault suite state (logs) kept in {stack.state}")
        else:
            shutil.rmtree(stack.state, ignore_errors=True)


@dataclass
class FaultRun:
    """One test's settings, workload and workers."""

    stack: FaultStack
    settings: Settings
    workload: Workload
    seed: int
    rng: random.Random
    workers: list[WorkerProcess] = field(default_factory=list)

    def worker(self, name: str = "worker", extra_env: dict[str, str] | None = None) -> WorkerProcess:
        slot = WorkerProcess(self.settings, f"{name}-{uuid.uuid4().hex[:4]}", extra_env)
        self.workers.append(slot)
        return slot

    def progress(self) -> int:
        """Decisions audited so far (a cheap probe for choosing kill points)."""
        from sqlalchemy import text

        from storage.db import engine_for

        try:
            with engine_for(self.settings.database_url).connect() as conn:
                return int(conn.execute(text(
                    "SELECT count(*) FROM audit_log WHERE action IN "
                    "('event.stored', 'event.rejected')")).scalar_one())
        except Exception:  # noqa: BLE001 - the database may be the fault being injected
            return -1

    def wait_done(self, planned: list[Planned] | None = None, timeout_s: float = 150.0,
                  inferred: bool = True) -> tuple[Outcome, float]:
        """Wait until every planned message has its decision; return the full outcome and
        the seconds it took."""
        planned = self.workload.sent if planned is None else planned
        universe = self.workload.sent
        started = time.monotonic()
        wait_until(lambda: observe(self.settings, planned, letters=False, inferred=inferred,
                                   universe=universe),
                   lambda o: o.complete, timeout_s=timeout_s)
        took = time.monotonic() - started
        return observe(self.settings, planned, inferred=inferred, universe=universe), took

    def explain(self, outcome: Outcome) -> str:
        logs = "\n".join(f"--- {w.name} (rc {w.returncode}) ---\n{w.log_tail(2500)}" for w in self.workers)
        return f"seed {self.seed}; problems: {outcome.problems()}\n{logs}"


def fault_settings(stack: FaultStack, database_url: str) -> Settings:
    tag = uuid.uuid4().hex[:6]
    return Settings(
        state_dir=stack.state,
        kafka_bootstrap=stack.bootstrap,
        database_url=database_url,
        topic_prefix=f"f{tag}.",
        app_id=f"attest-faults-{tag}",
        partitions=4,
        session_timeout_s=4.0,
        heartbeat_interval_s=0.5,
        batch_size=50,
        batch_within_s=0.1,
        registry_refresh_s=0.5,
        db_retry_max_s=2.0,
        worker_web_enabled=False,
        audit_checkpoint_every=200,
        audit_checkpoint_interval_s=5.0,
    )


@pytest.fixture
def fault_run(fault_stack: FaultStack) -> Iterator[FaultRun]:
    seed = int(os.environ.get("ATTEST_FAULTS_SEED") or random.SystemRandom().randrange(1, 10**6))
    with scratch_database(fault_stack.server_url, prefix="attest_faults") as url:
        settings = fault_settings(fault_stack, url)
        ensure_topics(settings)
        # The audit sink chains only signed audit messages: register this folder's worker and
        # operator audit keys in the run's fresh database, as `attest dev up` does.
        provision_local_signers(settings, "operator:faults")
        signers = Signers.register(url, f"faults-{uuid.uuid4().hex[:6]}")
        run = FaultRun(fault_stack, settings, Workload(settings, signers, seed), seed,
                       random.Random(seed))
        try:
            yield run
        finally:
            for slot in run.workers:
                if slot.alive:
                    slot.kill()
