"""Start, stop and describe the embedded stack, recorded in ``<state_dir>/stack.json``.

The stack file is how every other command finds the broker and the database (see
``config.settings``), and how ``down`` finds the processes to stop even from another shell.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from access.keys import ensure_local_keys
from config.settings import STACK_FILE, Settings
from devstack.broker import is_broker, start_broker, stop_broker
from devstack.errors import DevStackError
from devstack.postgres import (
    cluster_auth,
    ensure_access_login,
    ensure_worker_login,
    generated_password,
    postmaster_pid,
    start_postgres,
    stop_postgres,
)
from devstack.processes import choose_port
from security.intake_keys import ensure_intake_key
from security.private_files import private_folder


@dataclass(frozen=True)
class StackInfo:
    """What ``attest dev up`` recorded."""

    kafka_bootstrap: str
    database_url: str
    broker_pid: int
    postgres_pid: int
    pgdata: str
    started_at: str
    #: the access service's own login (member of attest_access_service only); carries its
    #: password, so stack.json is written 0600
    access_database_url: str = ""
    #: the workers' own login (member of attest_app only), for running workers least-privileged
    worker_database_url: str = ""

    def env_lines(self) -> list[str]:
        """For ``eval``: the superuser URL names its password file (psql and libpq read it)."""
        return [
            f"ATTEST_KAFKA_BOOTSTRAP={self.kafka_bootstrap}",
            f"ATTEST_DATABASE_URL={self.database_url}",
        ]


@dataclass(frozen=True)
class StackStatus:
    info: StackInfo | None
    broker_running: bool
    postgres_running: bool

    @property
    def running(self) -> bool:
        return self.broker_running and self.postgres_running


def _stack_file(settings: Settings) -> Path:
    return settings.state_dir / STACK_FILE


def read_stack(settings: Settings) -> StackInfo | None:
    """The recorded stack, or None when nothing was recorded (or the file is unreadable)."""
    try:
        return StackInfo(**json.loads(_stack_file(settings).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def status(settings: Settings) -> StackStatus:
    info = read_stack(settings)
    pgdata = Path(info.pgdata) if info else settings.state_dir / "pg"
    return StackStatus(
        info=info,
        broker_running=bool(info and is_broker(info.broker_pid)),
        postgres_running=postmaster_pid(pgdata) is not None,
    )


def up(settings: Settings, notice: Callable[[str], None] = print) -> StackInfo:
    """Start broker and database (or reuse a running stack); stop both on any failure."""
    # 0700: keys, passwords, logs. As root the embedded Postgres runs as its own system user
    # and must pass through to its data folder: 0711 (traverse, never list or read).
    private_folder(settings.state_dir, traversable=os.geteuid() == 0)
    # Key files per process (access service, worker, issuer), created 0600 once; see
    # docs/security.md.
    ensure_local_keys(settings.state_dir)
    # Attest's intake key, which producers may encrypt their events to (docs/events.md).
    ensure_intake_key(settings.intake_keys_dir)
    current = status(settings)
    if current.running and current.info:
        return current.info
    down(settings)  # a half-running stack is cleaned up before we start afresh

    state = settings.state_dir
    kafka_port = choose_port(settings.dev_kafka_port)
    pg_port = choose_port(settings.dev_postgres_port)
    for wanted, got, what in (
        (settings.dev_kafka_port, kafka_port, "broker"),
        (settings.dev_postgres_port, pg_port, "Postgres"),
    ):
        if wanted and wanted != got:
            notice(f"Port {wanted} is in use; the embedded {what} takes port {got} instead.")

    broker = None
    pgdata = state / "pg"
    initialised = cluster_auth(pgdata)
    if initialised and initialised != settings.dev_postgres_auth:
        notice(f"The embedded Postgres in {pgdata} was initialised with {initialised} "
               f"authentication and keeps it (ATTEST_DEV_POSTGRES_AUTH={settings.dev_postgres_auth} "
               f"applies to a new one: stop the stack and remove {pgdata} to get it; its data is lost).")
    try:
        broker = start_broker(kafka_port, state / "broker.log")
        database = start_postgres(pgdata, pg_port, auth=settings.dev_postgres_auth)
        # Postgres's start-up (as root) opens every folder above its data to everyone.
        private_folder(state, traversable=os.geteuid() == 0)
        access_url = ensure_access_login(
            pg_port, generated_password(state / "postgres-access.password"), database.password)
        worker_url = ensure_worker_login(
            pg_port, generated_password(state / "postgres-worker.password"), database.password)
    except BaseException:
        # Includes Ctrl-C: never leave a broker or a server behind after a failed start.
        if broker:
            stop_broker(broker.pid)
        stop_postgres(pgdata)
        raise
    info = StackInfo(
        kafka_bootstrap=broker.bootstrap,
        # names the superuser's 0600 password file, never carries the password: `attest dev
        # status`/`env` print it
        database_url=database.recorded_url,
        broker_pid=broker.pid,
        postgres_pid=database.pid,
        pgdata=str(pgdata.resolve()),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        access_database_url=access_url,
        worker_database_url=worker_url,
    )
    tmp = _stack_file(settings).with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(asdict(info), indent=2))
    os.replace(tmp, _stack_file(settings))
    return info


def down(settings: Settings) -> list[str]:
    """Stop whatever the stack file or the state folder says runs; return what was stopped."""
    info = read_stack(settings)
    stopped: list[str] = []
    if info and stop_broker(info.broker_pid):
        stopped.append("broker")
    pgdata = Path(info.pgdata) if info else settings.state_dir / "pg"
    if stop_postgres(pgdata):
        stopped.append("postgres")
    with contextlib.suppress(FileNotFoundError):
        _stack_file(settings).unlink()
    return stopped


def require_running(settings: Settings) -> StackInfo:
    """The running stack, or a clear error telling the operator how to start it."""
    current = status(settings)
    if not (current.running and current.info):
        raise DevStackError("The embedded stack is not running; start it with 'attest dev up'.")
    return current.info
