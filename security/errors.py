"""Errors of the security layer. A ``Rejection`` carries the stable reason code of a bad event."""

from __future__ import annotations

from config.errors import AttestError
from security.reasons import RejectReason


class SecurityError(AttestError):
    """Base of every error raised by ``security``."""


class UnsupportedAlgorithm(SecurityError):
    """An algorithm outside the accepted set (Ed25519/EdDSA, ES256)."""


class UnusableKey(SecurityError):
    """A JWK that cannot be used with its algorithm (wrong type, curve or length)."""


class Rejection(SecurityError):
    """An event is refused; ``reason`` is the code that goes to the dead-letter topic."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
