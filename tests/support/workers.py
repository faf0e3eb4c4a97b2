"""Child processes of the CLI (``attest worker``, ``attest serve``) and waits on them.

Readiness is a condition, never a fixed sleep: a worker is ready when its intake stage
answers ``GET /health`` with 200; a key change has reached a running worker when an event
signed with that key gets the decision the change implies.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx

from audit.queries import find_records
from bench.ledger import child_env
from config.settings import Settings
from devstack.processes import choose_port
from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from security.keyfiles import SigningKey
from streams.producer import OutgoingMessage, send_all, sign_payload
from streams.topics import TRANSACTIONS
from tests.support.waiting import wait_for

CLI = (sys.executable, "-m", "cli.main")


def settings_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that gives a child process exactly these settings (and ``extra``)."""
    return child_env(settings, extra)


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return f"(no log at {path})"


def launch(args: Sequence[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``attest ARGS`` in a session of its own (so ``terminate_tree`` stops all of it), logging
    stdout and stderr to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen([*CLI, *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def start_worker(settings: Settings, log_path: Path | None = None,
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """An ``attest worker`` with free web ports for intake and enrichment; not yet ready.

    The process carries ``web_port``, ``enrichment_web_port`` and ``log_path``; pass it to
    ``wait_until_ready`` before relying on it.
    """
    log_path = log_path or Path(settings.state_dir) / f"worker-{uuid.uuid4().hex[:6]}.log"
    env = settings_env(settings, {
        "ATTEST_WORKER_WEB_PORT": str(choose_port(0)),
        "ATTEST_ENRICHMENT_WEB_PORT": str(choose_port(0)),
        **(extra_env or {}),
    })
    proc = launch(["worker"], env, log_path)
    proc.web_port = int(env["ATTEST_WORKER_WEB_PORT"])  # type: ignore[attr-defined]
    proc.enrichment_web_port = int(env["ATTEST_ENRICHMENT_WEB_PORT"])  # type: ignore[attr-defined]
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def answers(url: str, statuses: Sequence[int] = (200,)) -> bool:
    """Whether GET ``url`` answers now with one of ``statuses``."""
    try:
        return httpx.get(url, timeout=2).status_code in statuses
    except httpx.HTTPError:
        return False


def wait_for_http(proc: subprocess.Popen[bytes], url: str, log_path: Path, timeout_s: float = 120,
                  statuses: Sequence[int] = (200,)) -> None:
    """Wait until ``url`` answers with one of ``statuses``; fail at once if ``proc`` exits."""
    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{url}: the process exited ({proc.returncode}) before it was "
                                 f"ready:\n{log_tail(log_path)}")
        return answers(url, statuses)

    try:
        wait_for(up, timeout_s, f"{url} to answer {'/'.join(map(str, statuses))}", interval_s=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{log_tail(log_path)}") from None


def wait_until_ready(proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    """Until the worker's intake serves ``/health`` with 200 and its enrichment stage answers
    ``/health`` at all (503 while it loads the model is an answer: tests that need the model
    wait for what it produces)."""
    log_path: Path = proc.log_path  # type: ignore[attr-defined]
    wait_for_http(proc, f"http://127.0.0.1:{proc.web_port}/health",  # type: ignore[attr-defined]
                  log_path, timeout_s)
    wait_for_http(proc, f"http://127.0.0.1:{proc.enrichment_web_port}/health",  # type: ignore[attr-defined]
                  log_path, timeout_s, statuses=(200, 503))


def decision(url: str, event_id: str) -> str | None:
    """``accepted``, a rejection's reason, or None while intake has not decided ``event_id``."""
    for record in find_records(url, correlation_ids=[event_id], limit=100):
        if record.action == "event.accepted":
            return "accepted"
        if record.action == "event.rejected":
            return record.reason or "rejected"
    return None


def wait_for_key_refresh(settings: Settings, key: SigningKey, expect: str = "accepted",
                         timeout_s: float = 90) -> None:
    """Until the running worker's key registry shows the latest change to ``key``.

    Workers reload the registry on a timer (``registry_refresh_s``); nothing outside says
    when. So: send a probe transaction signed by ``key`` and wait for its decision, again
    with a fresh probe until the decision is ``expect`` (``accepted`` once the key is
    registered, ``revoked_key`` once revoked). Each probe is decided before the next is sent,
    so no probe's decision lands after this returns. Probes have event ids of their own.
    """
    url = settings.database_url
    seen: list[str] = []

    def probe_decided_as_expected() -> bool:
        payload = transaction_payloads(1, key.source)[0]
        send_all(settings, TRANSACTIONS.name(settings),
                 [OutgoingMessage(None, sign_payload(key, payload, TRANSACTION_V1))])
        got = wait_for(lambda: decision(url, payload["event_id"]), timeout_s,
                       f"the worker to decide a probe signed by {key.kid}")
        seen.append(got)
        return got == expect

    try:
        wait_for(probe_decided_as_expected, timeout_s,
                 f"the worker's key refresh to make {key.kid} {expect}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the probes' decisions: {seen}") from None
