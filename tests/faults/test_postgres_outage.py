"""Postgres stopped mid-stream, cleanly (fast) and as a crash (immediate), then restarted.

One worker lives through both outages: it must hold the stream while the database is down
(retrying with backoff, saying so in its log), skip nothing, and store nothing twice.
"""

from __future__ import annotations

import time

from tests.faults.checks import audit_verify, observe
from tests.faults.conftest import FaultRun
from tests.faults.results import record
from tests.support.waiting import wait_until

GOOD, BAD = 120, 30


def _outage(run: FaultRun, mode: str) -> tuple[list, float]:
    """A wave in flight, Postgres stopped with ``mode`` part-way, a second wave sent while
    it is down, then Postgres back. Returns the messages and when Postgres was back."""
    worker = run.workers[0]
    before = max(run.progress(), 0)
    log_before = len(worker.log_text())
    first = run.workload.send(run.workload.build(GOOD, BAD))
    target = before + int(len(first) * run.rng.uniform(0.1, 0.7))
    wait_until(run.progress, lambda n: n >= target, timeout_s=90)
    run.stack.stop_postgres(mode)
    try:
        second = run.workload.send(run.workload.build(GOOD, BAD))
        told = wait_until(lambda: worker.log_text()[log_before:].lower(),
                          lambda text: "database unavailable" in text, timeout_s=60)
        assert worker.alive, run.explain(observe(run.settings, first, letters=False))
        assert "database unavailable" in told, f"the worker never said the database was down:\n{told}"
    finally:
        run.stack.start_postgres()
    return first + second, time.monotonic()


def test_postgres_fast_and_immediate_shutdown_lose_nothing(fault_run: FaultRun) -> None:
    run = fault_run
    worker = run.worker()
    worker.start()
    results = {}
    for mode in ("fast", "immediate"):
        planned, back = _outage(run, mode)
        outcome, _ = run.wait_done(planned)
        results[mode] = (outcome, time.monotonic() - back)
    verdict = audit_verify(run.settings)
    for mode, (outcome, recovery) in results.items():
        record(f"Postgres {mode} shutdown", outcome, recovery,
               note="stopped mid-wave with pg_ctl -m " + mode + "; a second wave sent while down")

    everything, _ = run.wait_done()
    assert worker.alive, run.explain(everything)
    assert everything.lost == 0, run.explain(everything)
    assert everything.duplicated == 0, run.explain(everything)
    assert not everything.wrong_reasons, run.explain(everything)
    assert everything.stored == everything.expected_stored
    assert verdict.returncode == 0 and "intact" in verdict.stdout, verdict.stdout + verdict.stderr
