"""Real ``attest worker`` processes that a fault test starts, kills and restarts many times."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from config.settings import Settings
from devstack.processes import terminate_tree
from tests.support.workers import launch, settings_env


def worker_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that gives a child process exactly these settings."""
    env = settings_env(settings)
    # Faust's info lines (joins, assignments, the model pool) explain a failed case; a run can
    # turn them down with ATTEST_FAULTS_WORKER_LOG_LEVEL.
    env["ATTEST_LOG_LEVEL"] = os.environ.get("ATTEST_FAULTS_WORKER_LOG_LEVEL", "info")
    env.update(extra or {})
    return env


class WorkerProcess:
    """One worker slot: each ``start`` launches a fresh process logging to the same file."""

    def __init__(self, settings: Settings, name: str, extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.name = name
        self.extra_env = extra_env or {}
        self.log_path = Path(settings.state_dir) / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def start(self) -> None:
        assert not self.alive, f"{self.name} is already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {self.name} start #{self.starts} ===\n".encode())
            log.flush()
        self.proc = launch(["worker"], worker_env(self.settings, self.extra_env), self.log_path)

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown code runs, nothing is flushed."""
        assert self.proc is not None
        self.kills += 1
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM and wait: a graceful leave (the group rebalances at once)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            terminate_tree(self.proc.pid, timeout_s=20)
        self.proc.wait(timeout=10)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]
