"""Each component's own audit-signing key file (issue 14, item 4).

A component that publishes audit records (the worker, the operator CLI) signs them with a
key of its own, in ``Settings.audit_signer_key_path(component)``: a private Ed25519 JWK,
0600 in a 0700 folder, created on first use like the checkpoint key, never printed or
logged (a ``SigningKey``'s repr shows only its kid). Only its public part is registered
(``attest audit signers add``); in production the file belongs to the component's own
account, or the signing is done by a KMS (docs/audit.md, "Audit-signing keys").
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from audit.checkpoints import load_or_create_ed25519_key
from config.settings import Settings
from security.keyfiles import SigningKey

WORKER = "worker"
OPERATOR = "operator"
#: Whom each built-in component's key speaks for, unless the registration says otherwise.
#: The worker's stages sign as ``worker:<host>:<pid>``; its audit sink raises alarms
#: (``audit.conflict``, ``audit.forged``) as ``audit-sink``. Operator commands sign as
#: ``operator:<user>@<host>`` (``attest demo`` as ``operator:attest-demo``).
DEFAULT_ACTORS: dict[str, tuple[str, ...]] = {
    WORKER: ("worker:*", "audit-sink"),
    OPERATOR: ("operator:*",),
}


def key_source(component: str) -> str:
    return f"audit-{component}"


def signer_key(settings: Settings, component: str) -> SigningKey:
    """``component``'s audit-signing key, created (0600) on first use."""
    return _load(settings.audit_signer_key_path(component), component)


@lru_cache(maxsize=16)
def _cached(path: Path, component: str, mtime_ns: int) -> SigningKey:
    return load_or_create_ed25519_key(path, key_source(component), private_parent=True)


def _load(path: Path, component: str) -> SigningKey:
    """Read once per file version: an operator command publishing records one by one (a
    replay) must not read and parse the key file for each."""
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return load_or_create_ed25519_key(path, key_source(component), private_parent=True)
    return _cached(path, component, mtime)
