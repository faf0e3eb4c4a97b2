"""Registering and revoking audit signers: audited operator actions (``attest audit signers``).

Order matters because the registration's own record is signed by the operator's audit key,
which may be the very key being registered (the first ``attest dev up``):

* **add**: the row is committed first, then ``audit.signer_added`` is published; the sink
  can only verify that record once the row exists. If the record cannot be sent, the
  registration is revoked at once and the command fails (exit 10): no key is usable without
  its audit record.
* **revoke**: ``audit.signer_revoked`` is published first (while the operator key still
  verifies), then the row is revoked; if the record cannot be sent, nothing is revoked
  (exit 10), as with every other audited operator action.

Detail carries the kid, component, actor patterns and the public key's ``x``: public facts
an auditor needs to match an alarm to a registration. Never a private member.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from audit.errors import SignerError, SignerNotAudited
from audit.signer_keys import DEFAULT_ACTORS, signer_key
from audit.signers import check_public_jwk, register_signers, revoke_signer
from audit.signing import AuditSigner
from config.settings import Settings
from operations.operator_audit import operator_record
from schemas.audit import AuditAction, AuditRecord


def operator_actor() -> str:
    return f"operator:{getpass.getuser()}@{socket.gethostname()}"


def _publish(settings: Settings, records: list[AuditRecord]) -> None:
    from streams.audit_publisher import publish_audit  # the broker only when changing signers

    publish_audit(settings, records)


def _added_record(signer: AuditSigner, actor: str) -> AuditRecord:
    return operator_record(AuditAction.AUDIT_SIGNER_ADDED, signer.kid, actor, {
        "kid": signer.kid, "component": signer.component, "actors": list(signer.actors),
        "x": signer.public_jwk.get("x")})


@dataclass(frozen=True)
class Registered:
    signer: AuditSigner
    added: bool  # False: the same key was registered already (nothing changed, no record)


def register_audited(settings: Settings, signers: Sequence[AuditSigner], actor: str) -> list[Registered]:
    """Register ``signers`` (all or none), then publish one ``audit.signer_added`` per new
    one; when publishing fails, the new ones are revoked and ``SignerNotAudited`` raised."""
    added = register_signers(settings.database_url, signers, actor)
    new = [s for s, was_added in zip(signers, added, strict=True) if was_added]
    if new:
        try:
            _publish(settings, [_added_record(s, actor) for s in new])
        except Exception as exc:  # any failure to get the records out: undo, loudly
            for signer in new:
                revoke_signer(settings.database_url, signer.kid, f"{actor} (not audited)")
            raise SignerNotAudited(
                f"the audit record of the registration could not be published ({exc}); "
                f"{', '.join(s.kid for s in new)} revoked again") from None
    return [Registered(s, a) for s, a in zip(signers, added, strict=True)]


def _check_component(component: str) -> None:
    if not component or len(component) > 64 or not component.replace("-", "").replace("_", "").isalnum():
        raise SignerError("a component name is letters, digits, - and _ (at most 64), e.g. worker")


def local_public_jwk(settings: Settings, component: str) -> dict[str, Any]:
    """The public JWK of this folder's key for ``component`` (created 0600 if absent)."""
    _check_component(component)
    return signer_key(settings, component).public_jwk


def add_signer(
    settings: Settings, component: str, actor: str, *,
    public_jwk: dict[str, Any] | None = None, actors: Sequence[str] = (),
) -> Registered:
    """Register ``component``'s audit-signing key: the public JWK given (a key made on
    another machine), else the local key file's (created 0600 on first use)."""
    _check_component(component)
    patterns = tuple(actors) or DEFAULT_ACTORS.get(component, ())
    if not patterns:
        raise SignerError(f"say whom {component!r} may speak for: --actor PATTERN (e.g. 'exporter:*')")
    if public_jwk is None:
        public_jwk = signer_key(settings, component).public_jwk
    public = check_public_jwk(public_jwk)
    kid = public.get("kid")
    if not isinstance(kid, str) or not kid:
        raise SignerError("the public JWK has no kid")
    return register_audited(settings, [AuditSigner(kid, component, public, patterns)], actor)[0]


def revoke_audited(settings: Settings, kid: str, actor: str) -> bool:
    """Revoke ``kid`` after publishing ``audit.signer_revoked``; False when it already was."""
    from audit.signers import list_signers

    found = [row.signer for row in list_signers(settings.database_url) if row.signer.kid == kid]
    if not found:
        raise SignerError(f"no audit signer {kid[:200]!r} is registered")
    if found[0].revoked_at is not None:
        return False  # nothing changes, nothing to record
    try:
        _publish(settings, [operator_record(AuditAction.AUDIT_SIGNER_REVOKED, kid, actor, {"kid": kid})])
    except Exception as exc:
        raise SignerNotAudited(
            f"nothing revoked: the audit record could not be published ({exc})") from None
    return revoke_signer(settings.database_url, kid, actor)


def provision_local_signers(settings: Settings, actor: str) -> list[Registered]:
    """The embedded stack's shortcut (``attest dev up``, ``attest demo``, the tests): make
    this installation's worker and operator keys (0600) and register those not registered
    yet, with their default actors. On one development machine the operator is also who
    would register them; in production each component's owner registers its own key."""
    signers = []
    for component in DEFAULT_ACTORS:
        key = signer_key(settings, component)
        signers.append(AuditSigner(key.kid, component, check_public_jwk(key.public_jwk),
                                   DEFAULT_ACTORS[component]))
    return register_audited(settings, signers, actor)
