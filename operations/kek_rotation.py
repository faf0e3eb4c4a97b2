"""``attest keys rotate-kek`` and ``attest keys retire-kek``: replacing a tier's key-encryption key.

Rotation is for a key that may have been stolen, so resealing the same wrapping keys is not
enough (their secrets would not change, and whoever kept a copy of them, or of their sealed
form and the old private key, would still open every data key). It mints a new tier key
version, mints *new* wrapping keys sealed to it, re-wraps every live data key of the tier
under them (batches of one transaction each; ``--resume`` continues an interrupted run) and
deletes the old wrapping keys. Data keys and field ciphertexts do not change.

The order is what makes it safe: the audit record is sent before anything changes; the new
private key is durable in the key file (and its public half in the worker's) before anything
is sealed to it; the key epoch is advanced so running workers re-read their keyring and drop
cached wrapping keys before any is deleted. Retiring a version afterwards removes its private
key from the file, and is refused while any wrapping key is still sealed to it.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from config.settings import Settings, secret_environ
from operations.errors import ActionRefused, AuditUnavailable, ExitCode, OperationsError
from operations.operator_audit import operator_record
from protection.errors import FieldProtectionError
from protection.keyring import StaticKeyring
from protection.keyring_sources import (
    environ_has_keys,
    keyring_path,
    load_keyring_file,
    write_keyring_file,
    write_worker_keyring,
)
from protection.rotation import Rewrapper
from protection.tiers import Tier
from schemas.audit import AuditAction
from storage.key_maintenance import (
    count_keys_to_move,
    finish_rotation,
    move_data_keys,
    start_rotation,
    with_version_locked,
)
from streams.audit_publisher import publish_audit
from streams.errors import BrokerUnavailable

#: Data keys re-wrapped per transaction (one new wrapping key each).
DEFAULT_BATCH = 1000

#: ``progress(moved, total)`` after every committed batch.
Progress = Callable[[int, int], None]


class KeyStillNeeded(OperationsError):
    """``attest keys retire-kek`` refused: wrapping keys are still sealed to that version."""

    exit_code = ExitCode.KEY_STILL_NEEDED


@dataclass(frozen=True, slots=True)
class Rotation:
    """One tier moved from key version ``before`` to ``after``.

    ``moved``: data keys re-wrapped under new wrapping keys; ``deleted``: old wrapping keys
    removed; ``resumed``: no new version was minted (an interrupted rotation was continued).
    """

    tier: Tier
    before: int
    after: int
    moved: int
    deleted: int
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class Retirement:
    """A tier key version removed from the service's (and the workers') keyring file."""

    tier: Tier
    version: int
    remaining: tuple[int, ...]


@contextmanager
def keyring_lock(state_dir: Path) -> Iterator[None]:
    """Hold ``<state_dir>/.keyring.lock`` (0600) for one rotation or retirement, or refuse.

    Two rotations at once would each add "the next version" and the second file written would
    drop the first one's new private key, leaving whatever it sealed unreadable for ever.
    """
    if not Path(state_dir).is_dir():  # no keyring either: loading it says so, in words
        yield
        return
    path = Path(state_dir) / ".keyring.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ActionRefused(f"another rotate-kek or retire-kek holds {path}; nothing was "
                                "changed, run this again when it has finished") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _tier_and_keyring(settings: Settings, tier: str, what: str) -> tuple[Tier, StaticKeyring]:
    """The tier named by the operator and the service's keyring file, or ``ActionRefused``."""
    if environ_has_keys(secret_environ()):
        raise ActionRefused(f"this process takes its keys from ATTEST_KEK_* variables; {what} with "
                            "the keyring file (or generate new variables and distribute them)")
    try:
        chosen = Tier.parse(tier)
    except FieldProtectionError as exc:
        raise ActionRefused(str(exc)) from None
    if chosen is Tier.PUBLIC:
        raise ActionRefused("public fields are not encrypted; nothing to rotate")
    keyring = load_keyring_file(keyring_path(settings.state_dir))
    if chosen not in keyring.readable_tiers():
        raise ActionRefused(f"{keyring_path(settings.state_dir)} holds no private {chosen.label} "
                            f"key; {what} needs it")
    return chosen, keyring


def _publish(settings: Settings, action: AuditAction, correlation: str, actor: str,
             detail: dict[str, object]) -> None:
    try:
        publish_audit(settings, [operator_record(action, correlation, actor, detail)])
    except BrokerUnavailable as exc:
        raise AuditUnavailable(f"nothing was changed: the audit record could not be sent ({exc})"
                               ) from None


def rotate_kek(
    settings: Settings, tier: str, actor: str, *, resume: bool = False,
    batch_size: int = DEFAULT_BATCH, progress: Progress | None = None,
) -> Rotation:
    """Mint a new key version for ``tier`` (unless ``resume``), new wrapping keys sealed to it,
    re-wrap every live data key of the tier under them and delete the old wrapping keys.

    ``resume`` continues an interrupted rotation to the tier's current version without
    minting another. Raises ``ActionRefused`` (nothing changed) when keys come from
    ATTEST_KEK_* variables, the tier is unknown or public, this host holds no private key of
    it, or ``batch_size`` is not positive; ``AuditUnavailable`` when the audit record cannot
    be sent (nothing changed either).
    """
    if batch_size < 1:
        raise ActionRefused("--batch-size must be at least 1")
    with keyring_lock(settings.state_dir):
        return _rotate(settings, tier, actor, resume, batch_size, progress)


def _rotate(settings: Settings, tier: str, actor: str, resume: bool, batch_size: int,
            progress: Progress | None) -> Rotation:
    chosen, keyring = _tier_and_keyring(settings, tier, "rotation")
    path = keyring_path(settings.state_dir)
    before = keyring.current_version(chosen)
    rotated = keyring if resume else keyring.with_new_version(chosen)
    after = rotated.current_version(chosen)
    url = settings.database_url
    total = count_keys_to_move(url, chosen, after)
    _publish(settings, AuditAction.KEY_ROTATED, str(uuid.uuid4()), actor, {
        "tier": chosen.label, "from_version": before, "to_version": after, "resumed": resume,
        "data_keys_to_rewrap": total, "new_wrapping_keys": True, "keyring": str(path)})
    if not resume:
        # Durable before anything is sealed to it; workers get the public half from here.
        write_keyring_file(rotated, path, replace=True)
    write_worker_keyring(settings.state_dir, rotated)
    # Running workers re-read their keyring at their next batch and seal to ``after``.
    start_rotation(url)
    rewrapper = Rewrapper(rotated, chosen, after)
    moved = 0
    while step := move_data_keys(url, chosen, after, rewrapper, batch_size):
        moved += step
        if progress is not None:
            progress(moved, max(total, moved))
    late, deleted = finish_rotation(url, chosen, after, rewrapper, batch_size)
    if progress is not None and late:
        progress(moved + late, max(total, moved + late))
    return Rotation(chosen, before, after, moved + late, deleted, resume)


def retire_kek(settings: Settings, tier: str, version: int, actor: str) -> Retirement:
    """Remove ``version`` of ``tier`` from the keyring files, once nothing is sealed to it.

    Raises ``KeyStillNeeded`` (exit 13) while any wrapping key of the tier is sealed to that
    version (finish the rotation first: ``rotate-kek --resume``), ``ActionRefused`` for the
    current version, a version the file does not have, or the cases ``rotate_kek`` refuses,
    ``AuditUnavailable`` when the record cannot be sent. The check, the audit record and the
    file's replacement happen while storing is locked out, so no worker seals to the version
    in between.
    """
    with keyring_lock(settings.state_dir):
        return _retire(settings, tier, version, actor)


def _retire(settings: Settings, tier: str, version: int, actor: str) -> Retirement:
    chosen, keyring = _tier_and_keyring(settings, tier, "retiring a key")
    if version not in keyring.versions(chosen):
        raise ActionRefused(f"{keyring_path(settings.state_dir)} has no {chosen.label} v{version}"
                            f" (it has {', '.join(f'v{v}' for v in keyring.versions(chosen))})")
    if version == keyring.current_version(chosen):
        raise ActionRefused(f"{chosen.label} v{version} is the current version: new wrapping keys "
                            "are sealed to it; rotate first (attest keys rotate-kek)")
    retired = keyring.without_version(chosen, version)
    path = keyring_path(settings.state_dir)

    def act(sealed_to_it: int) -> None:
        if sealed_to_it:
            raise KeyStillNeeded(
                f"{sealed_to_it} {chosen.label} wrapping keys are still sealed to v{version}; "
                f"finish the rotation first (attest keys rotate-kek --tier {chosen.label} --resume)")
        _publish(settings, AuditAction.KEK_RETIRED, str(uuid.uuid4()), actor, {
            "tier": chosen.label, "version": version, "keyring": str(path),
            "remaining_versions": list(retired.versions(chosen))})
        write_keyring_file(retired, path, replace=True)
        write_worker_keyring(settings.state_dir, retired)

    with_version_locked(settings.database_url, chosen, version, act)
    return Retirement(chosen, version, retired.versions(chosen))
