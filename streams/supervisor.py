"""Run each pipeline stage as its own process and stop them together.

Why processes: the stages are separate consumer groups, which Faust maps to separate apps,
and one process runs one app; separate processes also put intake and the model on
different cores, where one Python process would share one interpreter lock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from config.settings import Settings
from devstack.processes import choose_port, terminate_tree


def stage_environment(settings: Settings, role: str) -> dict[str, str]:
    """The child's environment: the parent's, with the stage's own web port.

    A busy enrichment port gets a free one instead (said on stderr): a metrics port must
    not stop the pipeline, and the intake port keeps its configured number for probes.
    """
    env = dict(os.environ)
    if role in ("audit", "reconciliation"):
        # Nothing of their own to serve; intake and enrichment have the ports.
        env["ATTEST_WORKER_WEB_ENABLED"] = "false"
    if role == "enrichment" and settings.worker_web_enabled:
        port = choose_port(settings.enrichment_web_port) if settings.enrichment_web_port else 0
        if port != settings.enrichment_web_port:
            print(f"enrichment web port {settings.enrichment_web_port} is busy; using {port}",
                  file=sys.stderr)
        env["ATTEST_WORKER_WEB_PORT"] = str(port)
    return env


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends SIGTERM when the supervisor dies.

    A SIGKILLed supervisor runs no cleanup; without this its stages ran on as orphans,
    holding partitions under a worker that no longer exists. Linux only (prctl); elsewhere
    the stages outlive a killed supervisor, as any process group would.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def run_stages(settings: Settings, roles: Sequence[str]) -> int:
    """Start one ``attest worker --role R`` per stage; return when any of them exits.

    The first exit decides: the others are stopped (SIGTERM, then SIGKILL) and its exit
    code is returned, so a supervisor above (systemd, Kubernetes, a test) sees a failure of
    either stage as the worker's failure and restarts the whole.
    """
    children = {
        role: subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "--role", role],
            env=stage_environment(settings, role),
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks or threads
        )
        for role in roles
    }
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while True:
            exited = [(role, child.returncode) for role, child in children.items()
                      if child.poll() is not None]
            if exited:
                break
            time.sleep(0.2)
    finally:
        for child in children.values():
            if child.poll() is None:
                terminate_tree(child.pid, timeout_s=15)
    role, code = exited[0]
    if stopping:
        return 0
    print(f"worker stage {role} exited with code {code}; stopped the others", file=sys.stderr)
    return code or 1
