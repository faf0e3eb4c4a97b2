"""Small process and port helpers shared by the broker and the database launchers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time

import psutil


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(preferred: int, host: str = "127.0.0.1") -> int:
    """The preferred port when free, else a free one the kernel picks (0 means any)."""
    if preferred and port_is_free(preferred, host):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float, host: str = "127.0.0.1") -> bool:
    """Poll until a TCP connect to ``host:port`` succeeds or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.1)
    return False


def pid_alive(pid: int | None) -> bool:
    """True when ``pid`` names a live process that is not a zombie."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def terminate_tree(pid: int, timeout_s: float = 5.0) -> None:
    """Stop a process and its children: SIGTERM first, SIGKILL for what remains."""
    try:
        parent = psutil.Process(pid)
    except psutil.Error:
        return
    procs = [parent, *parent.children(recursive=True)]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout_s)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
