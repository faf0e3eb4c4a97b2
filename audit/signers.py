"""The registry of audit signers: which public key may sign audit messages for whom.

One row per key in ``audit_signers`` (migration 0014): kid, component, public JWK, actor
patterns, who registered it and when, and when (and by whom) it was revoked. A row is never
deleted (the table refuses DELETE): a revoked key stays, so an alarm naming it can still be
explained. The audit sink reads the whole table once per batch (``signer_snapshot``), so a
revocation counts from the next batch on, without a restart. Every change is an operator
action and is audited (``audit.signers_admin``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.sql import bindparam

from audit.errors import AuditTablesMissing, SignerError
from audit.signing import AUDIT_JWS_ALG, AuditSigner
from security.errors import SecurityError
from security.signatures import public_key_for
from storage.db import engine_for, run_db

TABLE = "audit_signers"


@dataclass(frozen=True)
class SignerRow:
    """A registration as ``attest audit signers list`` shows it."""

    signer: AuditSigner
    registered_at: datetime
    registered_by: str
    revoked_by: str | None


def check_public_jwk(jwk: dict[str, Any]) -> dict[str, Any]:
    """The public members of an Ed25519 JWK; ``SignerError`` for anything else."""
    public = {k: jwk[k] for k in ("kty", "crv", "x", "kid") if k in jwk}
    if "d" in jwk:
        raise SignerError("that is a private key: register only the public JWK")
    try:
        public_key_for(AUDIT_JWS_ALG, public)
    except (SecurityError, TypeError) as exc:
        raise SignerError(f"not a usable Ed25519 public JWK: {exc}") from None
    return public


def _missing(exc: ProgrammingError) -> bool:
    return TABLE in str(exc)


def signer_snapshot(url: str) -> dict[str, AuditSigner]:
    """Every registered signer by kid, revoked ones included (the sink names them)."""
    return {row.signer.kid: row.signer for row in list_signers(url)}


def list_signers(url: str) -> list[SignerRow]:
    def read() -> list[SignerRow]:
        with engine_for(url).connect() as conn:
            rows = conn.execute(text(
                "SELECT kid, component, public_jwk, actors, registered_at, registered_by, "
                "revoked_at, revoked_by FROM audit_signers ORDER BY registered_at, kid")).all()
        return [SignerRow(AuditSigner(r.kid, r.component, dict(r.public_jwk), tuple(r.actors),
                                      r.revoked_at), r.registered_at, r.registered_by, r.revoked_by)
                for r in rows]

    try:
        return run_db(read)
    except ProgrammingError as exc:
        if _missing(exc):
            raise AuditTablesMissing(
                "the audit_signers table is missing: run `attest db upgrade`") from None
        raise


_INSERT = text(
    "INSERT INTO audit_signers (kid, component, alg, public_jwk, actors, registered_by) "
    "VALUES (:kid, :component, :alg, :jwk, :actors, :by) ON CONFLICT (kid) DO NOTHING"
).bindparams(bindparam("jwk", type_=JSONB))


def register_signers(url: str, signers: Sequence[AuditSigner], by: str) -> list[bool]:
    """Register ``signers`` in one transaction; per signer True when added, False when the
    same key (same component, JWK and actors) was registered already. A kid registered with
    other content raises ``SignerError`` and nothing is registered."""
    for signer in signers:
        if not signer.actors or any(not a or len(a) > 200 for a in signer.actors):
            raise SignerError(f"{signer.kid}: give one or more actor patterns (e.g. worker:*)")
        check_public_jwk(signer.public_jwk)

    def write() -> list[bool]:
        added = []
        with engine_for(url).begin() as conn:
            for s in signers:
                inserted = conn.execute(_INSERT, {
                    "kid": s.kid, "component": s.component, "alg": AUDIT_JWS_ALG,
                    "jwk": check_public_jwk(s.public_jwk), "actors": list(s.actors), "by": by,
                }).rowcount == 1
                if not inserted:
                    old = conn.execute(text(
                        "SELECT component, public_jwk, actors, revoked_at FROM audit_signers "
                        "WHERE kid = :kid"), {"kid": s.kid}).one()
                    same = (old.component == s.component and old.public_jwk.get("x") == s.public_jwk.get("x")
                            and tuple(old.actors) == tuple(s.actors))
                    if not same:
                        raise SignerError(
                            f"audit signer {s.kid} is registered already with another component, "
                            "key or actors: register a new key instead")
                    if old.revoked_at is not None:
                        raise SignerError(f"audit signer {s.kid} was revoked; register a new key")
                added.append(inserted)
        return added

    try:
        return run_db(write)
    except ProgrammingError as exc:
        if _missing(exc):
            raise AuditTablesMissing(
                "the audit_signers table is missing: run `attest db upgrade`") from None
        raise
    except DBAPIError as exc:
        cause = str(exc.orig).strip().splitlines()[0][:200] if exc.orig else type(exc).__name__
        raise SignerError(f"the registry refused the audit signer ({cause})") from exc


def revoke_signer(url: str, kid: str, by: str) -> bool:
    """Mark ``kid`` revoked (never deleted). True when it was revoked now, False when it was
    revoked already; ``SignerError`` when no such signer is registered."""

    def write() -> bool:
        with engine_for(url).begin() as conn:
            done = conn.execute(text(
                "UPDATE audit_signers SET revoked_at = now(), revoked_by = :by "
                "WHERE kid = :kid AND revoked_at IS NULL"), {"kid": kid, "by": by}).rowcount
            if done:
                return True
            if conn.execute(text("SELECT 1 FROM audit_signers WHERE kid = :kid"),
                            {"kid": kid}).first() is None:
                raise SignerError(f"no audit signer {kid[:200]!r} is registered")
            return False

    return run_db(write)
