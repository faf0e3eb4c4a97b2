"""The key registry as the verifier sees it: an immutable snapshot of registered keys.

The snapshot is a plain mapping so verification stays a pure function; workers swap in a
fresh snapshot from Postgres every ``registry_refresh_s`` (see ``agents.intake``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from security.reasons import RejectReason


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One registered public key: bound to one source, one algorithm, one validity window,
    and optionally to the schemas (``typs``) and the department it may speak for.

    ``typs`` and ``department`` are ``None`` for "any": keys registered before the binding
    existed keep working as they did (docs/events.md, "Key binding").

    ``encrypted_only``: a token signed by this key is accepted only inside a JWE to Attest's
    intake key. It is part of the registry, not of a process's settings, so the worker,
    ``attest replay`` and ``attest dlq retry`` decide alike (docs/events.md).
    """

    kid: str
    source: str
    alg: str
    public_jwk: dict[str, Any] = field(hash=False)
    not_before: datetime | None = None
    not_after: datetime | None = None
    revoked_at: datetime | None = None
    revoked_reason: str | None = None
    typs: frozenset[str] | None = None
    department: str | None = None
    encrypted_only: bool = False

    def unusable_reason(self, at: datetime) -> tuple[RejectReason, str] | None:
        """Why this key may not sign an event issued at ``at``, or None when it may."""
        if self.revoked_at is not None and at >= self.revoked_at:
            return RejectReason.REVOKED_KEY, (
                f"key {self.kid!r} was revoked at {self.revoked_at.isoformat()}"
                + (f" ({self.revoked_reason})" if self.revoked_reason else "")
            )
        if self.not_before is not None and at < self.not_before:
            return RejectReason.EXPIRED_KEY, (
                f"key {self.kid!r} is valid from {self.not_before.isoformat()}"
            )
        if self.not_after is not None and at >= self.not_after:
            return RejectReason.EXPIRED_KEY, (
                f"key {self.kid!r} expired at {self.not_after.isoformat()}"
            )
        return None

    def scope_reason(self, typ: str, department: str | None) -> tuple[RejectReason, str] | None:
        """Why this key may not sign a ``typ`` event of ``department``, or None when it may.

        ``department`` is the value of the schema's department field (``schemas/tiers.yaml``:
        ``source`` or ``agency``); ``None`` when the schema names none.
        """
        if self.typs is not None and typ not in self.typs:
            return RejectReason.SCOPE_MISMATCH, (
                f"key {self.kid!r} may sign {', '.join(sorted(self.typs)) or 'no schema'}, "
                f"not {typ[:64]!r}"
            )
        if self.department is not None and department != self.department:
            return RejectReason.SCOPE_MISMATCH, (
                f"key {self.kid!r} speaks for department {self.department!r}, "
                f"the event belongs to {str(department)[:64]!r}"
            )
        return None

    def plain_token_reason(self) -> tuple[RejectReason, str] | None:
        """Why a plain (unencrypted) JWS signed by this key is refused, or None when it may come plain."""
        if self.encrypted_only:
            return RejectReason.ENCRYPTION_REQUIRED, (
                f"key {self.kid!r} ({self.source!r}) signs only for encrypted events "
                "(JWE of the JWS): a plain token is refused"
            )
        return None


KeySnapshot = Mapping[str, KeyRecord]
