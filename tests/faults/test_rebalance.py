"""A second worker joining mid-stream and leaving again: partitions move with batches in flight.

While the second worker starts, waves keep arriving, so the group rebalances while the
first worker is part-way through batches; then the second worker leaves (SIGTERM) while
another wave is in flight. Every message must still be decided exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.faults.checks import audit_verify
from tests.faults.conftest import FaultRun
from tests.faults.results import record
from tests.support.waiting import wait_until

WAVE_GOOD, WAVE_BAD = 40, 10


def _keep_busy(run: FaultRun, until: Callable[[], bool], max_waves: int = 4,
               timeout_s: float = 150.0) -> int:
    """Send a wave whenever the last one is half decided (at most ``max_waves``) until
    ``until()``; return how many waves were sent."""
    deadline = time.monotonic() + timeout_s
    waves = 0
    while not until() and time.monotonic() < deadline:
        if waves >= max_waves:
            wait_until(until, bool, timeout_s=deadline - time.monotonic())
            break
        before = max(run.progress(), 0)
        run.workload.send(run.workload.build(WAVE_GOOD, WAVE_BAD))
        waves += 1
        half = before + (WAVE_GOOD + WAVE_BAD) // 2
        wait_until(run.progress, lambda n, h=half: n >= h or until(), timeout_s=60)
    return waves


def _joined(worker_log: Callable[[], str], group: str, since: int) -> bool:
    return f"Joined group '{group}'" in worker_log()[since:]


def test_a_worker_joining_and_leaving_mid_stream_changes_nothing(fault_run: FaultRun) -> None:
    run = fault_run
    first, second = run.worker("first"), run.worker("second")
    first.start()
    group = run.settings.app_id
    _keep_busy(run, lambda: _joined(first.log_text, group, 0), max_waves=1)
    mark = len(first.log_text())
    second.start()
    # Rebalance while batches are in flight: the first worker re-joins when the second arrives.
    waves = _keep_busy(run, lambda: _joined(second.log_text, group, 0)
                       and _joined(first.log_text, group, mark))
    assert second.alive and first.alive, run.explain(run.wait_done(timeout_s=1)[0])

    before = max(run.progress(), 0)
    wave = run.workload.send(run.workload.build(WAVE_GOOD * 2, WAVE_BAD * 2))
    target = before + int(len(wave) * run.rng.uniform(0.1, 0.6))
    wait_until(run.progress, lambda n: n >= target, timeout_s=90)
    second.stop()
    left = time.monotonic()
    run.workload.send(run.workload.build(WAVE_GOOD, WAVE_BAD))
    outcome, _ = run.wait_done()
    recovery = time.monotonic() - left
    verdict = audit_verify(run.settings)
    record("second worker joins, then leaves", outcome, recovery,
           note=f"{waves} waves sent while the group rebalanced; the leaver exited "
                f"with {second.returncode}")

    assert first.alive, run.explain(outcome)
    assert second.returncode == 0, second.log_tail()
    assert outcome.lost == 0, run.explain(outcome)
    assert outcome.duplicated == 0, run.explain(outcome)
    assert not outcome.wrong_reasons, run.explain(outcome)
    assert verdict.returncode == 0 and "intact" in verdict.stdout, verdict.stdout + verdict.stderr
