"""Issue 12: kill the real worker mid-run (SIGKILL, twice), restart it, and the final
reconciliation report equals an uninterrupted run's of the same seeded scenario.

Each run has its own topics (prefix), consumer groups (app id), state folder and scratch
database: the reconciliation state row is keyed by stage name only (``finance``), so two
runs in one database would share it. Both runs get the same producer keys and the same
worker keyring (so the same blind indexes), and the same seeded events (same event ids).

What runs is ``attest worker --role intake,reconciliation`` (the supervisor and one process
per stage, in a process group of its own that SIGKILL takes down whole); the model-backed
stages stay out (enrichment, and the model in the fuzzy stage) so the run fits a loaded
2-core machine. "Consumed everything" is a condition: the reconciliation group's committed
offsets reach the end of the transactions topic.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from operations.broker_reads import BrokerReader
from operations.recon_report import recon_report
from protection.keyring_sources import worker_keyring_path
from security.keyfiles import SigningKey, generate_key, write_private_key
from storage import keys as registry
from storage.reconciliation import list_breaks, list_matches
from streams.admin import ensure_topics
from streams.topics import TRANSACTIONS, group_id
from tests.support.databases import scratch_database
from tests.support.waiting import wait_until
from tests.support.workers import launch, log_tail, settings_env

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PAYMENTS, SEED, MESS = 300, 1212, 0.3
SOURCES = ("core-ledger", "payment-switch", "bank-statement")
KILLS = 2


def _run_settings(base: Settings, state: Path, url: str, tag: str) -> Settings:
    return base.model_copy(update={
        "state_dir": state, "database_url": url,
        "topic_prefix": f"{base.topic_prefix}re{tag}.", "app_id": f"{base.app_id}-re{tag}",
        "batch_size": 50, "worker_web_enabled": False, "db_retry_max_s": 2.0,
        "recon_model_similarity": False,
    })


def _state_folder(base: Settings, root: Path, tag: str, keys: list[SigningKey]) -> Path:
    """A state folder of the run's own: the session's worker keyring and the producer keys."""
    state = root / f"state-{tag}"
    state.mkdir()
    shutil.copy2(worker_keyring_path(base.state_dir), worker_keyring_path(state))
    for key in keys:
        write_private_key(key, state / "keys")
    return state


def _produce(settings: Settings, truth: Path) -> None:
    args = ["produce", "--scenario", "finance", "--count", str(PAYMENTS), "--seed", str(SEED),
            "--mess", str(MESS), "--truth", str(truth)]
    done = subprocess.run([sys.executable, "-m", "cli.main", *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _lag(settings: Settings) -> int:
    """Messages of the transactions topic the reconciliation group has not committed yet."""
    topic = TRANSACTIONS.name(settings)
    with BrokerReader(settings, timeout_s=5.0) as reader:
        ends = reader.watermarks(topic)
        committed = reader.committed(group_id(settings, "reconciliation"), topic, sorted(ends))
    return sum(high - (committed.get(p) if committed.get(p) is not None else low)
               for p, (low, high) in ends.items())


def _stored(settings: Settings) -> int:
    try:
        return len(list_matches(settings.database_url)) + len(list_breaks(settings.database_url))
    except Exception:  # noqa: BLE001 - tables may be briefly locked by a dying transaction
        return -1


class Worker:
    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings, self.log = settings, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = settings_env(self.settings, {"ATTEST_LOG_LEVEL": "info"})
        self.proc = launch(["worker", "--role", "intake,reconciliation"], env, self.log)

    def kill(self) -> None:
        """SIGKILL the process group: supervisor and both stages, nothing flushed."""
        assert self.proc is not None
        assert self.proc.poll() is None, f"the worker exited early:\n{log_tail(self.log)}"
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


def _wait_consumed(settings: Settings, worker: Worker, timeout_s: float = 240) -> None:
    def probe() -> int:
        assert worker.proc is not None and worker.proc.poll() is None, \
            f"the worker exited:\n{log_tail(worker.log)}"
        try:
            return _lag(settings)
        except Exception:  # noqa: BLE001 - the group may not have committed yet
            return -1

    lag = wait_until(probe, lambda n: n == 0, timeout_s=timeout_s)
    assert lag == 0, f"reconciliation still lags {lag} messages:\n{log_tail(worker.log)}"


def _comparable(settings: Settings) -> dict[str, Any]:
    """The report without what depends on wall time, and the stored rows themselves."""
    report = recon_report(settings, None)
    for volatile in ("generated_at", "timeline"):
        report.pop(volatile)
    matches = sorted((m.match_id, m.pairing, m.stage, m.rule, round(m.score, 9), m.kind, m.status,
                      m.left_ids, m.right_ids) for m in list_matches(settings.database_url))
    breaks = sorted((b.break_id, b.pairing, b.record_id, b.source, b.reason, b.related_ids)
                    for b in list_breaks(settings.database_url))
    return {"report": report, "matches": matches, "breaks": breaks}


def test_killed_and_restarted_worker_ends_with_the_uninterrupted_report(
        stack_settings: Settings, database_url: str, tmp_path: Path) -> None:
    keys = [generate_key(source) for source in SOURCES]
    runs: dict[str, dict[str, Any]] = {}
    kill_points: list[tuple[int, int]] = []
    with scratch_database(database_url, "recon_once") as url_once, \
            scratch_database(database_url, "recon_killed") as url_killed:
        for tag, url in (("once", url_once), ("killed", url_killed)):
            for key in keys:
                registry.add_key(url, key.kid, key.source, key.alg, key.public_jwk)
            state = _state_folder(stack_settings, tmp_path, tag, keys)
            settings = _run_settings(stack_settings, state, url, f"{tag}{uuid.uuid4().hex[:4]}")
            ensure_topics(settings)
            _produce(settings, tmp_path / f"truth-{tag}.json")
            worker = Worker(settings, tmp_path / f"worker-{tag}.log")
            try:
                worker.start()
                if tag == "killed":
                    final = runs["once"]["stored"]
                    for k in range(1, KILLS + 1):
                        # Kill once a share of the uninterrupted run's results is stored.
                        target = final * k // (KILLS + 1)
                        reached = wait_until(lambda s=settings: _stored(s), lambda n, t=target: n >= t,
                                             timeout_s=180)
                        worker.kill()
                        kill_points.append((reached, _stored(settings)))
                        worker.start()
                _wait_consumed(settings, worker)
            finally:
                worker.stop()
            runs[tag] = {**_comparable(settings), "stored": _stored(settings), "log": worker.log}

    once, killed = runs["once"], runs["killed"]
    assert once["stored"] > 0 and once["report"]["matches"]["total"] > 0
    # Each kill came mid-run: some results were stored, not all of them.
    assert all(0 < after < once["stored"] for _, after in kill_points), \
        f"kill points (reached, after the kill) {kill_points} of {once['stored']} results"
    for what in ("matches", "breaks"):
        only_once = sorted(set(once[what]) - set(killed[what]))
        only_killed = sorted(set(killed[what]) - set(once[what]))
        assert not only_once and not only_killed, (
            f"{what} differ after kills at {kill_points}: only uninterrupted {only_once[:5]}, "
            f"only killed {only_killed[:5]}\n{log_tail(killed['log'])}")
    assert killed["report"] == once["report"]
