"""Why ``attest audit`` could not give an answer, each with its documented exit code.

docs/audit.md lists them. ``verify`` itself exits 0 (intact) or 2 (tampered); the codes
here say it could not decide, so an auditor never mistakes "not checked" for "intact".
"""

from __future__ import annotations

from enum import IntEnum

from operations.errors import ExitCode, OperationsError


class VerifyExit(IntEnum):
    """Exit codes of ``attest audit verify`` (and of ``pin`` where they apply)."""

    INTACT = 0
    CANNOT_CHECK = 1  # database down, tables missing, no pinned key, an unusable key file
    TAMPERED = 2
    NO_TOPIC_CHECKPOINT = ExitCode.UNKNOWN_TOPIC  # 3: no audit topic, or no checkpoint on it
    BROKER_UNREACHABLE = ExitCode.BROKER_UNREACHABLE  # 6: the audit topic could not be read
    AUDIT_UNAVAILABLE = ExitCode.AUDIT_UNAVAILABLE  # 10: pin's audit record was not sent


class AuditCheckError(OperationsError):
    """One sentence for the operator; ``exit_code`` is what the CLI exits with."""

    exit_code = ExitCode.ERROR  # VerifyExit.CANNOT_CHECK


class AuditTablesMissing(AuditCheckError):
    """The audit tables are missing or older than the code (``attest db upgrade``)."""


class NoTrustedKey(AuditCheckError):
    """No pinned public key, no ``ATTEST_AUDIT_PUBLIC_KEY``, no ``--key``."""


class BadKeyFile(AuditCheckError):
    """A key file or setting that is not an Ed25519 public JWK."""


class PinConflict(AuditCheckError):
    """A different key is already pinned and ``--replace`` was not given."""


class PinNotAudited(AuditCheckError):
    """The pin was not changed because its audit record could not be published."""

    exit_code = ExitCode.AUDIT_UNAVAILABLE


class ForgedAudit(AuditCheckError):
    """A message on the audit topic that is not a verified record of its registered signer.

    ``problem`` is the alarm's reason (``unsigned``, ``wrong_typ``, ``alg_not_allowed``,
    ``unknown_signer``, ``revoked_signer``, ``bad_signature``, ``actor_not_allowed``);
    ``reject_reason`` the dead letter's stable code; ``kid`` the header's kid, if any.
    """

    def __init__(self, problem: str, reject_reason: object, detail: str, kid: str | None = None) -> None:
        super().__init__(detail)
        self.problem = problem
        self.reject_reason = reject_reason
        self.detail = detail
        self.kid = kid


class SignerError(AuditCheckError):
    """An audit-signer registration that cannot be made (unknown, conflicting, unusable)."""


class SignerNotAudited(SignerError):
    """The registration was undone because its audit record could not be published."""

    exit_code = ExitCode.AUDIT_UNAVAILABLE


class SinkKeyUnusable(SignerError):
    """The audit sink's own signing key is not a registered, unrevoked signer for its actors."""
