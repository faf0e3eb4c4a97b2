"""``attest keys init`` and ``attest keys rotate-kek``: the field-encryption keyring.

The keyring holds one X25519 key-encryption key per tier (internal, confidential, restricted)
and one blind-index key per identifier domain. It is a local file created 0600 in the state
folder; nothing here ever prints key material.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import typer

from access.keys import ensure_local_keys
from cli.keys import operator
from cli.output import console, err_console, fail
from config.settings import Settings, get_settings, secret_environ
from protection.errors import FieldProtectionError
from protection.keyring import StaticKeyring
from protection.keyring_sources import (
    environ_has_keys,
    keyring_path,
    load_keyring_file,
    worker_keyring_path,
    write_keyring_file,
    write_worker_keyring,
)
from protection.reader import rewrap
from protection.tiers import PROTECTED_TIERS, Tier
from schemas.audit import AuditAction, AuditRecord, audit_id_for
from storage.key_maintenance import rewrap_wrapping_keys
from streams.audit_publisher import publish_audit
from streams.errors import BrokerUnavailable


def create_keyring(settings: Settings) -> tuple[StaticKeyring, bool]:
    """Create (or complete) every process's key file; what ``attest dev up`` calls too.

    The access service's keyring (``keyring.json``, every tier's private key), the worker's
    (``worker-keyring.json``, public tier keys and index keys only), the built-in issuer's
    signing key and the access service's attestation key (access.keys).
    """
    made = ensure_local_keys(settings.state_dir)
    return made.keyring, made.keyring_created


def _record(action: str, correlation: str, detail: dict[str, object]) -> AuditRecord:
    return AuditRecord(
        audit_id=audit_id_for(action, correlation, datetime.now(UTC).isoformat()),
        actor=operator(), action=action, correlation_id=correlation, subject_ids=[correlation],
        detail=detail,
    )


def init() -> None:
    """Create the field-encryption keyring (0600): a key-encryption key per tier and a
    blind-index key per identifier domain. Safe to run again: it only adds what is missing.

    One file per process, each 0600: ATTEST_STATE_DIR/keyring.json for the access service
    (`attest serve`, the only process holding tier private keys), worker-keyring.json for
    workers (public tier keys and blind-index keys), issuer/signing-key.jwk for the built-in
    token issuer, access/service-key.jwk for the service's attestations.
    """
    settings = get_settings()
    path = keyring_path(settings.state_dir)
    keyring, created = create_keyring(settings)
    console.print(f"{'created' if created else 'checked'} keyring {path} (mode 0600)")
    console.print(f"worker keyring {worker_keyring_path(settings.state_dir)} (public tier keys only)")
    for line in keyring.describe():
        console.print(f"  {line}")
    if created:
        try:
            publish_audit(settings, [_record(AuditAction.KEYRING_CREATED, str(path), {
                "tiers": [t.label for t in PROTECTED_TIERS],
                "domains": sorted(keyring.index_keys)})])
        except BrokerUnavailable as exc:
            err_console.print(f"[yellow]warning:[/] the keyring was created but the audit record "
                              f"could not be sent: {exc}")


def rotate_kek(
    tier: str = typer.Option(..., "--tier", "-t",
                             help="internal, confidential or restricted."),
) -> None:
    """Add a new key-encryption key version for TIER and re-wrap that tier's keys under it.

    Only the tier's wrapping keys are resealed (one transaction); data keys and field
    ciphertexts are not touched. Older key versions stay in the keyring so that a worker
    still running with the old public key stays readable; restart workers after a rotation
    and run it again later to move what they sealed meanwhile. Audited; if the audit record
    cannot be sent, nothing is re-wrapped.
    """
    settings = get_settings()
    if environ_has_keys(secret_environ()):
        fail("this process takes its keys from ATTEST_KEK_* variables; rotate with the keyring "
             "file (or generate new variables and distribute them)")
    try:
        chosen = Tier.parse(tier)
    except FieldProtectionError as exc:
        fail(str(exc))
    if chosen is Tier.PUBLIC:
        fail("public fields are not encrypted; nothing to rotate")
    path = keyring_path(settings.state_dir)
    keyring = load_keyring_file(path)
    if chosen not in keyring.readable_tiers():
        fail(f"{path} holds no private {chosen.label} key; rotation needs it to re-wrap")
    before = keyring.current_version(chosen)
    rotated = keyring.with_new_version(chosen)
    after = rotated.current_version(chosen)
    # The new private key is durable before anything is sealed to it; workers get its public
    # half (they seal new wrapping keys to it after a restart).
    write_keyring_file(rotated, path, replace=True)
    write_worker_keyring(settings.state_dir, rotated)
    rotation_id = str(uuid.uuid4())

    def audit(count: int) -> None:
        publish_audit(settings, [_record(AuditAction.KEY_ROTATED, rotation_id, {
            "tier": chosen.label, "from_version": before, "to_version": after,
            "wrapping_keys_rewrapped": count, "keyring": str(path)})])

    try:
        count = rewrap_wrapping_keys(settings.database_url, chosen, after,
                                     lambda record: rewrap(rotated, record), before_commit=audit)
    except BrokerUnavailable as exc:
        fail(f"nothing was re-wrapped: the audit record could not be sent ({exc}); the keyring "
             f"now has {chosen.label} v{after}, run the rotation again when the broker is back")
    console.print(f"{chosen.label}: key-encryption key v{before} -> v{after}; "
                  f"re-wrapped {count} wrapping keys (field data untouched)")
