"""``attest keys init``: create (or complete) every process's key file, and audit a new keyring.

The files and their modes are ``access.keys``'s; this module adds what an operator action
needs around them: the audit record of a newly created keyring, and the lines that tell the
operator what is held (tiers, versions, domains; never key material).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from access.keys import ensure_local_keys
from config.settings import Settings
from operations.operator_audit import operator_record
from protection.keyring_sources import keyring_path, worker_keyring_path
from protection.tiers import PROTECTED_TIERS
from schemas.audit import AuditAction
from streams.audit_publisher import publish_audit
from streams.errors import BrokerUnavailable


@dataclass(frozen=True, slots=True)
class KeyFiles:
    """What ``init_key_files`` found or made; ``audit_error`` is set when the record was not sent."""

    path: Path
    worker_path: Path
    created: bool
    holdings: tuple[str, ...]
    audit_error: str | None = None

    def lines(self) -> list[str]:
        """What the operator is told, in order (paths and holdings; never key material)."""
        return [f"{'created' if self.created else 'checked'} keyring {self.path} (mode 0600)",
                f"worker keyring {self.worker_path} (public tier keys only)",
                *(f"  {line}" for line in self.holdings)]

    def warning(self) -> str | None:
        """A created keyring whose audit record could not be sent is kept, and said so."""
        if self.audit_error is None:
            return None
        return f"the keyring was created but the audit record could not be sent: {self.audit_error}"


def init_key_files(settings: Settings, actor: str) -> KeyFiles:
    """Create whatever key file is missing (safe to run again) and audit a new keyring.

    A broker that cannot take the audit record does not undo the keys (they exist on disk
    either way); the outcome carries the reason so the operator is warned.
    """
    path = keyring_path(settings.state_dir)
    made = ensure_local_keys(settings.state_dir)
    keyring = made.keyring
    files = KeyFiles(path, worker_keyring_path(settings.state_dir), made.keyring_created,
                     tuple(keyring.describe()))
    if not files.created:
        return files
    try:
        publish_audit(settings, [operator_record(AuditAction.KEYRING_CREATED, str(path), actor, {
            "tiers": [t.label for t in PROTECTED_TIERS], "domains": sorted(keyring.index_keys)})])
    except BrokerUnavailable as exc:
        return KeyFiles(files.path, files.worker_path, True, files.holdings, str(exc))
    return files
