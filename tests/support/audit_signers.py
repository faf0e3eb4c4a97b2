"""Audit signers for tests: a key, its registration, and signed audit-topic messages.

The audit sink chains only messages signed by a registered audit signer (docs/audit.md);
tests that feed the sink directly sign what they feed it with these helpers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agents.messages import IncomingMessage
from audit.signer_keys import DEFAULT_ACTORS, signer_key
from audit.signers import register_signers
from audit.signing import AuditSigner, sign_audit_message
from config.settings import Settings
from schemas.audit import AuditRecord, encode_batches
from security.keyfiles import SigningKey, generate_key


@dataclass(frozen=True)
class AuditTestSigner:
    """A private audit-signing key and its registration (not yet registered anywhere)."""

    key: SigningKey
    signer: AuditSigner

    def register(self, url: str) -> AuditTestSigner:
        register_signers(url, [self.signer], "operator:test")
        return self

    def sign(self, value: bytes) -> bytes:
        return sign_audit_message(self.key, value)

    def messages(self, records: Sequence[AuditRecord], first_offset: int = 0,
                 topic: str = "t.audit") -> list[IncomingMessage]:
        """One signed message per record, as operator commands publish them."""
        return [IncomingMessage(topic, 0, first_offset + i, None, self.sign(r.to_bytes()),
                                datetime.now(UTC)) for i, r in enumerate(records)]

    def batches(self, records: Sequence[AuditRecord], size: int, first_offset: int = 0,
                topic: str = "t.audit") -> list[IncomingMessage]:
        """Signed batch messages, as a worker publishes them."""
        return [IncomingMessage(topic, 0, first_offset + i, None, self.sign(v), datetime.now(UTC))
                for i, v in enumerate(encode_batches(list(records), size))]


def new_signer(component: str = "worker",
               actors: Sequence[str] = ("worker:*", "audit-sink")) -> AuditTestSigner:
    key = generate_key(f"audit-{component}", "Ed25519")
    return AuditTestSigner(key, AuditSigner(key.kid, component, key.public_jwk, tuple(actors)))


def register_local_signers(url: str, signers_dir: Path) -> None:
    """Register the worker and operator keys in ``signers_dir`` (the session's) in the
    database ``url``, without audit records: for scratch databases, whose workers sign with
    the session's keys like every other process of the run."""
    settings = Settings(audit_signers_dir=signers_dir)
    keys = {component: signer_key(settings, component) for component in DEFAULT_ACTORS}
    register_signers(url, [AuditSigner(k.kid, c, k.public_jwk, DEFAULT_ACTORS[c])
                           for c, k in keys.items()], "operator:pytest")
