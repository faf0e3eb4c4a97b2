"""``attest keys rotate-kek``: a new key-encryption key version for one tier, and re-wrapping.

Only the tier's wrapping keys are resealed (one transaction, ``storage.key_maintenance``);
data keys and field ciphertexts are not touched. The order is what makes it safe: the new
private key is durable in the key file before anything is sealed to it, and the audit record
is sent inside the re-wrap transaction, so an unsendable record re-wraps nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from config.settings import Settings, secret_environ
from operations.errors import ActionRefused
from operations.operator_audit import operator_record
from protection.errors import FieldProtectionError
from protection.keyring_sources import (
    environ_has_keys,
    keyring_path,
    load_keyring_file,
    write_keyring_file,
    write_worker_keyring,
)
from protection.reader import rewrap
from protection.tiers import Tier
from schemas.audit import AuditAction
from storage.key_maintenance import rewrap_wrapping_keys
from streams.audit_publisher import publish_audit
from streams.errors import BrokerUnavailable


@dataclass(frozen=True, slots=True)
class Rotation:
    """One tier's key-encryption key moved from ``before`` to ``after``; ``rewrapped`` keys resealed."""

    tier: Tier
    before: int
    after: int
    rewrapped: int


def rotate_kek(settings: Settings, tier: str, actor: str) -> Rotation:
    """Add a new key-encryption key version for ``tier`` and re-wrap that tier's keys under it.

    Raises ``ActionRefused`` (nothing re-wrapped) when keys come from ATTEST_KEK_* variables,
    the tier is unknown or public, this host holds no private key of it, or the audit record
    cannot be sent. Older versions stay in the key file, so a worker still sealing to the old
    public key stays readable; a later rotation moves what it sealed meanwhile.
    """
    if environ_has_keys(secret_environ()):
        raise ActionRefused("this process takes its keys from ATTEST_KEK_* variables; rotate with "
                            "the keyring file (or generate new variables and distribute them)")
    try:
        chosen = Tier.parse(tier)
    except FieldProtectionError as exc:
        raise ActionRefused(str(exc)) from None
    if chosen is Tier.PUBLIC:
        raise ActionRefused("public fields are not encrypted; nothing to rotate")
    path = keyring_path(settings.state_dir)
    keyring = load_keyring_file(path)
    if chosen not in keyring.readable_tiers():
        raise ActionRefused(f"{path} holds no private {chosen.label} key; rotation needs it to re-wrap")
    before = keyring.current_version(chosen)
    rotated = keyring.with_new_version(chosen)
    after = rotated.current_version(chosen)
    # The new private key is durable before anything is sealed to it; workers get its public
    # half (they seal new wrapping keys to it after a restart).
    write_keyring_file(rotated, path, replace=True)
    write_worker_keyring(settings.state_dir, rotated)
    rotation_id = str(uuid.uuid4())

    def audit(count: int) -> None:
        publish_audit(settings, [operator_record(AuditAction.KEY_ROTATED, rotation_id, actor, {
            "tier": chosen.label, "from_version": before, "to_version": after,
            "wrapping_keys_rewrapped": count, "keyring": str(path)})])

    try:
        count = rewrap_wrapping_keys(settings.database_url, chosen, after,
                                     lambda record: rewrap(rotated, record), before_commit=audit)
    except BrokerUnavailable as exc:
        raise ActionRefused(
            f"nothing was re-wrapped: the audit record could not be sent ({exc}); the keyring "
            f"now has {chosen.label} v{after}, run the rotation again when the broker is back"
        ) from None
    return Rotation(chosen, before, after, count)
