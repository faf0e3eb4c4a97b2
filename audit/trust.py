"""Which public keys ``attest audit verify`` trusts to have signed checkpoints.

The trust anchor must not be the writer's own private key file: whoever can write the log
as the worker can replace that file and sign whatever they like. So verify trusts, in this
order, the first of:

1. ``--key FILE`` (repeatable): exactly these public JWKs, for this run;
2. ``ATTEST_AUDIT_PUBLIC_KEY``: a file's path or the JWK (or JWK set) JSON itself;
3. the key pinned by ``attest audit pin --key FILE``: ``<state dir>/audit-public-key.jwk``,
   read-only, replaced only with ``--replace`` and never without an audit record.

With none of them, verify refuses to answer (docs/audit.md).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.checkpoints import NoteVerifier, load_or_create_service_key
from audit.errors import BadKeyFile, NoTrustedKey, PinConflict, PinNotAudited
from config.settings import Settings
from schemas.audit import AuditAction, AuditRecord, audit_id_for
from security.errors import SecurityError

PINNED_NAME = "audit-public-key.jwk"
#: Recorded on the audit topic when the pinned key is set or replaced.
KEY_PINNED_ACTION = AuditAction.AUDIT_KEY_PINNED
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k"})


def pinned_path(settings: Settings) -> Path:
    return settings.state_dir / PINNED_NAME


@dataclass(frozen=True)
class TrustedKeys:
    """The verifiers and where they came from (printed, so an auditor sees the anchor)."""

    verifiers: tuple[NoteVerifier, ...]
    jwks: tuple[dict[str, Any], ...]
    source: str

    @property
    def names(self) -> str:
        return ", ".join(v.name for v in self.verifiers)


def public_jwks(document: object, where: str) -> list[dict[str, Any]]:
    """The public Ed25519 JWKs in a JWK, a JWK set or a key file; private members dropped."""
    if isinstance(document, dict) and isinstance(document.get("keys"), list):
        found = document["keys"]
    elif isinstance(document, dict) and isinstance(document.get("jwk"), dict):
        found = [document["jwk"]]  # a key file: {"source": ..., "jwk": {...}}
    else:
        found = [document]
    out = []
    for jwk in found:
        if not isinstance(jwk, dict):
            raise BadKeyFile(f"{where} is not a usable Ed25519 public JWK: not a JWK object")
        public = {k: v for k, v in jwk.items() if k not in _PRIVATE_MEMBERS}
        try:
            NoteVerifier.from_jwk(public)
        except (ValueError, KeyError, TypeError, SecurityError) as exc:
            raise BadKeyFile(f"{where} is not a usable Ed25519 public JWK: {exc}") from None
        out.append(public)
    if not out:
        raise BadKeyFile(f"{where} holds no key")
    return out


def _read_file(path: Path) -> list[dict[str, Any]]:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadKeyFile(f"{path} is not a usable Ed25519 public JWK: {exc}") from None
    return public_jwks(document, str(path))


def _from_setting(value: str) -> list[dict[str, Any]]:
    text = value.strip()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise BadKeyFile(f"ATTEST_AUDIT_PUBLIC_KEY is not a JWK: {exc}") from None
        return public_jwks(document, "ATTEST_AUDIT_PUBLIC_KEY")
    return _read_file(Path(text).expanduser())


def _trusted(jwks: list[dict[str, Any]], source: str) -> TrustedKeys:
    verifiers = tuple(NoteVerifier.from_jwk(j) for j in jwks)
    return TrustedKeys(verifiers, tuple(jwks), source)


def trusted_keys(settings: Settings, files: Sequence[Path] = ()) -> TrustedKeys:
    """The keys whose checkpoint signatures count; ``NoTrustedKey`` when none is configured.

    Never the service's private key file: that is the writer's, not the auditor's anchor.
    """
    if files:
        jwks = [jwk for path in files for jwk in _read_file(path)]
        return _trusted(jwks, "--key " + " ".join(str(p) for p in files))
    if settings.audit_public_key:
        return _trusted(_from_setting(settings.audit_public_key), "ATTEST_AUDIT_PUBLIC_KEY")
    pinned = pinned_path(settings)
    if pinned.exists():
        return _trusted(_read_file(pinned), f"pinned in {pinned}")
    raise NoTrustedKey(
        "no trusted key to check checkpoint signatures: no pinned key, no "
        "ATTEST_AUDIT_PUBLIC_KEY, no --key (the writer's own key file is not trusted by default). Get "
        "the public JWK from the signer "
        "(`attest audit pubkey` where the checkpoints are signed), then pin it once with "
        "`attest audit pin --key FILE`, set ATTEST_AUDIT_PUBLIC_KEY, or pass --key FILE")


def _fingerprint(jwks: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((str(j.get("kid")), str(j.get("x"))) for j in jwks)


@dataclass(frozen=True)
class PinResult:
    path: Path
    names: str
    changed: bool
    replaced: bool


def _operator() -> str:
    return f"operator:{getpass.getuser()}@{socket.gethostname()}"


def _publish_pin_record(settings: Settings, jwks: list[dict[str, Any]], replaced: list[str],
                        path: Path) -> None:
    from streams.audit_publisher import publish_audit  # the broker only when pinning

    kids = [str(j["kid"]) for j in jwks]
    record = AuditRecord(
        audit_id=audit_id_for(KEY_PINNED_ACTION, str(path), *kids, uuid.uuid4()),
        actor=_operator(), action=KEY_PINNED_ACTION, correlation_id=f"audit-key-pin:{path}",
        subject_ids=kids,
        detail={"path": str(path), "keys": jwks, "replaced": replaced},
    )
    try:
        publish_audit(settings, [record])
    except Exception as exc:  # any failure to get the record out: nothing is pinned
        raise PinNotAudited(
            f"nothing pinned: the audit record of the pin could not be published ({exc})"
        ) from None


def pin_keys(settings: Settings, files: Sequence[Path], replace: bool = False) -> PinResult:
    """Pin the public keys in ``files`` as verify's trust anchor, read-only, audited.

    The same keys again change nothing. Other keys replace the pinned ones only with
    ``replace``; the audit record (on the audit topic) is published before the file changes,
    so an unaudited replacement never happens through this function.
    """
    return _pin(settings, [jwk for path in files for jwk in _read_file(path)], replace)


def _pin(settings: Settings, jwks: list[dict[str, Any]], replace: bool) -> PinResult:
    path = pinned_path(settings)
    names = ", ".join(str(j["kid"]) for j in jwks)
    before: list[dict[str, Any]] = _read_file(path) if path.exists() else []
    if before and _fingerprint(before) == _fingerprint(jwks):
        return PinResult(path, names, changed=False, replaced=False)
    if before and not replace:
        raise PinConflict(
            f"{path} already pins another key ({', '.join(str(j.get('kid')) for j in before)}): "
            "pass --replace to replace it (the replacement is audited)")
    _publish_pin_record(settings, jwks, [str(j.get("kid")) for j in before], path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump({"keys": jwks}, out, indent=2)
            out.write("\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return PinResult(path, names, changed=True, replaced=bool(before))


def service_public_jwk(settings: Settings) -> dict[str, Any]:
    """The public JWK of the service key that signs checkpoints (created 0600 on first use)."""
    return load_or_create_service_key(settings.service_key_path).public_jwk


def pin_own_key_for_development(settings: Settings) -> PinResult | None:
    """The demo's shortcut: pin this installation's own service key when nothing is pinned.

    On one development machine the writer and the auditor are the same person, so trusting
    the key the sink is about to sign with is honest there; in production the key comes
    from the signer (docs/audit.md) and is pinned by whoever audits. Audited like any pin.
    Returns None when a key is already pinned or configured (it is left alone).
    """
    if settings.audit_public_key or pinned_path(settings).exists():
        return None
    return _pin(settings, [service_public_jwk(settings)], replace=False)
