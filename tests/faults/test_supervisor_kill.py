"""SIGKILL of the `attest worker` process alone (an OOM kill, `kill -9 <pid>`).

`attest worker` supervises one process per stage. When the supervisor is killed outright,
its stages must not live on as orphans: a restarted worker would run beside them, and an
operator who killed the worker would still have stages consuming and writing.
"""

from __future__ import annotations

import contextlib
import os
import signal

import psutil

from tests.faults.conftest import FaultRun
from tests.support.waiting import wait_until


def test_stages_stop_when_their_supervisor_is_killed(fault_run: FaultRun) -> None:
    worker = fault_run.worker()
    worker.start()
    assert worker.proc is not None
    supervisor = psutil.Process(worker.proc.pid)
    stages = wait_until(lambda: supervisor.children(), lambda c: len(c) >= 2, timeout_s=120)
    assert len(stages) >= 2, worker.log_tail()
    try:
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(timeout=10)
        alive = wait_until(lambda: [s for s in stages if s.is_running()
                                    and s.status() != psutil.STATUS_ZOMBIE],
                           lambda left: not left, timeout_s=30)
        assert not alive, f"orphaned stages still running: {[s.cmdline()[-1] for s in alive]}"
    finally:
        for stage in stages:
            with contextlib.suppress(psutil.Error):
                stage.kill()
