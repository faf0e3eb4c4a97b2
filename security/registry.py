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
    """One registered public key: bound to one source, one algorithm, one validity window."""

    kid: str
    source: str
    alg: str
    public_jwk: dict[str, Any] = field(hash=False)
    not_before: datetime | None = None
    not_after: datetime | None = None
    revoked_at: datetime | None = None
    revoked_reason: str | None = None

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


KeySnapshot = Mapping[str, KeyRecord]
