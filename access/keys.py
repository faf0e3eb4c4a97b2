"""Key files per process, made in one place (``attest keys init``, ``attest dev up``).

* ``keyring.json``: the access service's keyring, every tier's private key (and index keys);
* ``worker-keyring.json``: the worker's, tier public keys and blind-index keys only;
* ``issuer/signing-key.jwk`` (+ public ``issuer/jwks.json``): the built-in token issuer's;
* ``access/service-key.jwk``: the access service's attestation key (registrations, decisions).

Each is created 0600 with ``O_EXCL`` in a 0700 folder and never printed. On separate machines,
copy only the file a process needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from joserfc.jwk import OKPKey

from access.approvals import ServiceAttestor
from access.issuer import ensure_issuer, read_private_json, write_private_json
from protection.keyring import StaticKeyring
from protection.keyring_sources import ensure_process_keyrings
from protection.tiers import protection_catalog

SERVICE_KEY = Path("access") / "service-key.jwk"


@dataclass(frozen=True)
class LocalKeys:
    keyring: StaticKeyring
    keyring_created: bool
    issuer_created: bool
    service_key_created: bool


def service_key_path(state_dir: Path) -> Path:
    return Path(state_dir) / SERVICE_KEY


def ensure_service_key(state_dir: Path) -> bool:
    path = service_key_path(state_dir)
    if path.exists():
        return False
    write_private_json(path, OKPKey.generate_key("Ed25519", auto_kid=True).as_dict(private=True))
    return True


def load_attestor(state_dir: Path) -> ServiceAttestor:
    return ServiceAttestor(OKPKey.import_key(read_private_json(service_key_path(state_dir))))


def ensure_local_keys(state_dir: Path) -> LocalKeys:
    """Create whatever key file is missing; existing ones are kept (the keyring is completed)."""
    keyring, created = ensure_process_keyrings(state_dir, protection_catalog().domains)
    return LocalKeys(keyring, created, ensure_issuer(state_dir), ensure_service_key(state_dir))
