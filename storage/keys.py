"""The key registry table: add, list, revoke, and the snapshot workers verify against."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert

from security.registry import KeyRecord
from storage.db import engine_for, run_db
from storage.errors import StorageError
from storage.models import SigningKeyRow


class KeyConflict(StorageError):
    """A kid is already registered with different content."""


def _record(row: SigningKeyRow) -> KeyRecord:
    return KeyRecord(
        kid=row.kid,
        source=row.source,
        alg=row.alg,
        public_jwk=dict(row.public_jwk),
        not_before=row.not_before,
        not_after=row.not_after,
        revoked_at=row.revoked_at,
        revoked_reason=row.revoked_reason,
    )


def add_key(
    url: str,
    kid: str,
    source: str,
    alg: str,
    public_jwk: dict[str, Any],
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> bool:
    """Register a key. True when added, False when the identical key was already there."""

    def write() -> bool:
        with engine_for(url).begin() as conn:
            stmt = (
                insert(SigningKeyRow)
                .values(kid=kid, source=source, alg=alg, public_jwk=public_jwk,
                        not_before=not_before, not_after=not_after)
                .on_conflict_do_nothing(index_elements=["kid"])
                .returning(SigningKeyRow.kid)
            )
            if conn.execute(stmt).first():
                return True
            existing = conn.execute(
                select(SigningKeyRow.source, SigningKeyRow.alg, SigningKeyRow.public_jwk)
                .where(SigningKeyRow.kid == kid)
            ).one()
            if (existing.source, existing.alg, existing.public_jwk) != (source, alg, public_jwk):
                raise KeyConflict(f"kid {kid!r} is already registered with a different key")
            return False

    return run_db(write)


def list_keys(url: str) -> list[KeyRecord]:
    def read() -> list[KeyRecord]:
        with engine_for(url).connect() as conn:
            rows = conn.execute(select(SigningKeyRow).order_by(SigningKeyRow.created_at)).all()
        return [_record(SigningKeyRow(**row._mapping)) for row in rows]

    return run_db(read)


def key_snapshot(url: str) -> dict[str, KeyRecord]:
    """Every key by kid: what the verifier consults."""
    return {record.kid: record for record in list_keys(url)}


def revoke_key(url: str, kid: str, reason: str, at: datetime) -> KeyRecord | None:
    """Mark a key revoked (never deleted). None when no such kid; idempotent otherwise."""

    def write() -> KeyRecord | None:
        with engine_for(url).begin() as conn:
            conn.execute(
                update(SigningKeyRow)
                .where(SigningKeyRow.kid == kid, SigningKeyRow.revoked_at.is_(None))
                .values(revoked_at=at, revoked_reason=reason)
            )
            row = conn.execute(select(SigningKeyRow).where(SigningKeyRow.kid == kid)).first()
        return _record(SigningKeyRow(**row._mapping)) if row else None

    return run_db(write)
