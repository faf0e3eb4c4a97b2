"""The worker killed with SIGKILL at random points, several times in one run, restarted."""

from __future__ import annotations

import time

from tests.faults.checks import audit_verify
from tests.faults.conftest import FaultRun
from tests.faults.results import record
from tests.support.waiting import wait_until

KILLS = 3
WAVE_GOOD, WAVE_BAD = 160, 40


def test_sigkill_at_random_points_loses_nothing_and_stores_nothing_twice(fault_run: FaultRun) -> None:
    run = fault_run
    worker = run.worker()
    worker.start()
    kill_points = []
    for _ in range(KILLS):
        # A wave in flight, then a kill once a random share of it has been decided: during
        # a batch, between the store and the audit, or while the group is still joining.
        before = max(run.progress(), 0)
        wave = run.workload.send(run.workload.build(WAVE_GOOD, WAVE_BAD))
        target = before + int(len(wave) * run.rng.uniform(0.05, 0.9))
        reached = wait_until(run.progress, lambda n, t=target: n >= t, timeout_s=90)
        assert worker.alive, run.explain(run.wait_done(timeout_s=1)[0])
        worker.kill()
        kill_points.append(reached - before)
        worker.start()
    restarted = time.monotonic()
    run.workload.send(run.workload.build(WAVE_GOOD, WAVE_BAD))
    outcome, _ = run.wait_done()
    recovery = time.monotonic() - restarted
    verdict = audit_verify(run.settings)
    record("worker SIGKILL x3", outcome, recovery,
           note=f"killed after {kill_points} decisions of waves of {WAVE_GOOD + WAVE_BAD}")

    assert worker.alive, run.explain(outcome)
    assert outcome.lost == 0, run.explain(outcome)
    assert outcome.duplicated == 0, run.explain(outcome)
    assert not outcome.wrong_reasons, run.explain(outcome)
    assert outcome.stored == outcome.expected_stored
    assert outcome.dead_lettered == outcome.expected_rejected
    assert verdict.returncode == 0 and "intact" in verdict.stdout, verdict.stdout + verdict.stderr
