"""The state folder's disk full or read-only: a clear error, no corruption.

The state folder holds the worker's keyring, Attest's checkpoint-signing key, producers'
private keys and Faust's data folders. It is put on a small tmpfs of its own (skipped where
mounting is not allowed), filled up or remounted read-only, and then:

- `attest keys generate` must fail with one sentence (no traceback) and leave no broken key
  file behind that would make every later `attest produce` fail;
- a worker must either run normally (it needs to write nothing there) or stop with one clear
  sentence; and once the disk is fixed, every message is decided exactly once.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from security.keyfiles import keys_for_source
from tests.faults.checks import audit_verify
from tests.faults.conftest import FaultRun
from tests.faults.results import record
from tests.faults.workers import worker_env
from tests.support.waiting import wait_until

#: What a worker needs from the state folder, copied onto the small disk. Not the service
#: key: the audit stage must create its checkpoint-signing key there, which is the write
#: that can tear.
WORKER_FILES = ("worker-keyring.json", "keyring.json")


def _mount(path: Path, size: str) -> None:
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode})")


@pytest.fixture
def small_disk(fault_run: FaultRun) -> Iterator[Path]:
    """A 1 MiB tmpfs holding a copy of the worker's keyrings."""
    where = Path(tempfile.mkdtemp(prefix="attest-small-state-"))
    _mount(where, "1m")
    try:
        for name in WORKER_FILES:
            source = fault_run.stack.state / name
            if source.exists():
                shutil.copy2(source, where / name)
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)
        shutil.rmtree(where, ignore_errors=True)


def fill(path: Path) -> Path:
    """Fill the disk under ``path`` to the last byte; return the filler to delete later."""
    filler = path / "filler"
    with filler.open("wb", buffering=0) as out:
        for chunk in (65536, 4096, 1):
            try:
                while True:
                    out.write(b"\0" * chunk)
            except OSError:
                continue
    return filler


def remount_read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)


def remount_read_write(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,rw", str(path)], check=True, capture_output=True)


def _cli(run: FaultRun, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = worker_env(run.settings.model_copy(update={"state_dir": state}))
    env["ATTEST_LOG_LEVEL"] = "warn"
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def _one_clear_sentence(result: subprocess.CompletedProcess[str], *words: str) -> None:
    said = result.stdout + result.stderr
    assert result.returncode != 0, said
    assert "Traceback" not in said, said
    assert any(w.lower() in said.lower() for w in words), said


def test_keys_generate_on_a_full_disk_fails_clearly(fault_run: FaultRun, small_disk: Path) -> None:
    fill(small_disk)
    result = _cli(fault_run, small_disk, "keys", "generate", "--source", "full-disk")
    _one_clear_sentence(result, "no space left")


def test_keys_generate_on_a_read_only_disk_fails_clearly(fault_run: FaultRun, small_disk: Path) -> None:
    remount_read_only(small_disk)
    try:
        result = _cli(fault_run, small_disk, "keys", "generate", "--source", "read-only")
        _one_clear_sentence(result, "read-only")
    finally:
        remount_read_write(small_disk)


def test_a_full_disk_leaves_no_broken_key_file(fault_run: FaultRun, small_disk: Path) -> None:
    filler = fill(small_disk)
    _cli(fault_run, small_disk, "keys", "generate", "--source", "full-disk")
    filler.unlink()
    keys_dir = small_disk / "keys"
    leftovers = [p.name for p in keys_dir.glob("*.jwk")] if keys_dir.is_dir() else []
    assert leftovers == [], f"a failed write left {leftovers}"
    keys_for_source(keys_dir, "full-disk")  # raises UnusableKey on a broken file


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_worker_on_a_broken_state_disk_fails_clearly_or_runs(
    fault_run: FaultRun, small_disk: Path, fault: str
) -> None:
    run = fault_run
    filler = fill(small_disk) if fault == "full" else None
    if fault == "read-only":
        remount_read_only(small_disk)
    worker = run.worker(f"worker-{fault}")
    worker.settings = run.settings.model_copy(update={"state_dir": small_disk})
    worker.log_path = run.stack.state / f"{worker.name}.log"
    worker.start()
    planned = run.workload.send(run.workload.build(30, 10))
    # Either it exits with a reason, or it decides the wave.
    wait_until(lambda: (worker.alive, run.progress()),
               lambda s: not s[0] or s[1] >= len(planned), timeout_s=150)
    exited = not worker.alive
    if exited:
        said = worker.log_text()
        assert worker.returncode != 0, said[-3000:]
        cause = "No space left on device" if fault == "full" else "Read-only file system"
        assert cause in said, f"the worker stopped without naming the cause:\n{said[-3000:]}"
    if filler is not None:
        filler.unlink()
    if fault == "read-only":
        remount_read_write(small_disk)
    fixed = time.monotonic()
    if exited:
        worker.start()
    outcome, _ = run.wait_done(planned)
    recovery = time.monotonic() - fixed
    verdict = audit_verify(worker.settings)  # checkpoints are signed by the key made there
    record(f"state folder {fault}", outcome, recovery,
           note=("the worker stopped with a clear error and, once the disk was fixed, decided "
                 "everything" if exited else "the worker needs no writes there and ran normally"))

    assert worker.alive, run.explain(outcome)
    assert outcome.lost == 0 and outcome.duplicated == 0, run.explain(outcome)
    assert verdict.returncode == 0 and "intact" in verdict.stdout, verdict.stdout + verdict.stderr
