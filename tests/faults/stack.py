"""An embedded broker and Postgres that the fault tests may kill and restart at will.

Not the session stack of tests/conftest.py: other tests share that one, and a fault test
stops its components. Ports stay fixed across restarts, so a worker's configured address
stays right; the broker keeps topics in memory, so a restarted broker starts empty.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from config.settings import Settings
from devstack import stack
from devstack.broker import start_broker, stop_broker
from devstack.postgres import (
    SYSTEM_USER,
    bin_dir,
    postmaster_pid,
    start_postgres,
    stop_postgres,
    superuser_url,
)
from devstack.processes import choose_port, wait_for_port


@dataclass
class FaultStack:
    """One broker and one Postgres in ``state``; each can be crashed and brought back."""

    state: Path
    broker_port: int = field(default_factory=lambda: choose_port(0))
    postgres_port: int = field(default_factory=lambda: choose_port(0))
    broker_pid: int | None = None

    @property
    def pgdata(self) -> Path:
        return self.state / "pg"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def server_url(self) -> str:
        return superuser_url(self.pgdata, self.postgres_port)  # names its password file

    def start(self) -> None:
        """The first start goes through ``devstack.stack.up``, so the state folder gets every
        key file a worker needs, exactly as ``attest dev up`` makes them."""
        info = stack.up(Settings(state_dir=self.state, dev_kafka_port=self.broker_port,
                                 dev_postgres_port=self.postgres_port), notice=lambda _: None)
        self.broker_pid = info.broker_pid
        self.broker_port = int(info.kafka_bootstrap.rsplit(":", 1)[1])
        self.postgres_port = int(info.database_url.rsplit(":", 1)[1].split("/")[0])

    # -- broker ---------------------------------------------------------------------------

    def start_broker(self) -> None:
        self.broker_pid = start_broker(self.broker_port, self.state / "broker.log").pid

    def kill_broker(self) -> None:
        """SIGKILL: the broker's memory (topics, offsets, groups) is gone."""
        assert self.broker_pid is not None
        proc = psutil.Process(self.broker_pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.broker_pid = None

    # -- Postgres -------------------------------------------------------------------------

    def start_postgres(self) -> None:
        start_postgres(self.pgdata, self.postgres_port)
        assert wait_for_port(self.postgres_port, 30)

    def stop_postgres(self, mode: str) -> None:
        """``pg_ctl stop -m fast`` (clean) or ``-m immediate`` (a crash: recovery on start)."""
        assert mode in {"fast", "immediate"}
        subprocess.run(
            [str(bin_dir() / "pg_ctl"), "-w", "-t", "30", "-D", str(self.pgdata), "-m", mode, "stop"],
            user=SYSTEM_USER if os.geteuid() == 0 else None,
            check=True, capture_output=True, timeout=60,
        )
        assert postmaster_pid(self.pgdata) is None

    def close(self) -> None:
        if self.broker_pid is not None:
            stop_broker(self.broker_pid)
        stop_postgres(self.pgdata)
