"""The embedded stack's lifecycle: up, status, env, down, busy ports, no orphans."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from config.settings import Settings
from devstack import stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def _processes_using(state: Path) -> list[str]:
    """Broker or Postgres processes whose command line names this state folder."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(state) in cmdline and ("postgres" in cmdline or "tansu" in cmdline):
            found.append(cmdline)
    return found


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _demo_worker(demo_pid: int) -> list[int]:
    """The demo's ``attest worker`` children."""
    found = []
    for child in psutil.Process(demo_pid).children(recursive=True):
        try:
            if "worker" in child.cmdline():
                found.append(child.pid)
        except psutil.Error:
            continue
    return found


def test_up_status_down_and_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        settings = Settings(state_dir=tmp_path, dev_kafka_port=taken, dev_postgres_port=0)
        notices: list[str] = []
        info = stack.up(settings, notice=notices.append)
        try:
            assert any(str(taken) in n for n in notices), notices
            assert not info.kafka_bootstrap.endswith(f":{taken}")
            assert stack.status(settings).running
            assert stack.up(settings) == info  # a second `up` reuses the running stack
            assert f"ATTEST_DATABASE_URL={info.database_url}" in info.env_lines()
        finally:
            stopped = stack.down(settings)
    assert set(stopped) == {"broker", "postgres"}
    assert not stack.status(settings).running
    assert not _alive(info.broker_pid)
    assert not _processes_using(tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_demo_leaves_no_process(tmp_path: Path, sig: signal.Signals) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTEST_")}
    env.update({"ATTEST_STATE_DIR": str(tmp_path), "ATTEST_DEV_KAFKA_PORT": "0",
                "ATTEST_DEV_POSTGRES_PORT": "0"})
    demo = subprocess.Popen([sys.executable, "-m", "cli.main", "demo", "--count", "50"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_for(lambda: (tmp_path / "stack.json").exists(), 60, "the demo to start its stack")
    # Interrupted mid-run: once it has a worker of its own to stop as well.
    wait_for(lambda: _demo_worker(demo.pid), 60, "the demo to start its worker")
    recorded = json.loads((tmp_path / "stack.json").read_text())
    started = {p.pid for p in psutil.Process(demo.pid).children(recursive=True)}
    started |= {recorded["broker_pid"], recorded["postgres_pid"]}
    demo.send_signal(sig)  # Ctrl-C sends SIGINT; a CI timeout or `kill` sends SIGTERM
    demo.wait(timeout=60)
    wait_for(lambda: not [pid for pid in started if _alive(pid)], 30,
             f"the demo's processes {sorted(started)} to exit")
    assert not _processes_using(tmp_path)
    assert not (tmp_path / "stack.json").exists()
