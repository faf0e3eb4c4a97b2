"""The key registry table: add, list, revoke, require encryption, and the snapshot workers
verify against."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from security.registry import KeyRecord
from storage.db import engine_for, run_db
from storage.errors import StorageError
from storage.models import SigningKeyRow


class KeyConflict(StorageError):
    """A kid is already registered with different content."""


class KeyRefused(StorageError):
    """The database refused a key's values (a kid longer than 200 characters, ...)."""


@dataclass(frozen=True)
class NewKey:
    """A key to register: its identity, public half, validity window and binding.

    ``typs`` and ``department`` ``None`` mean "any" (docs/events.md, "Key binding");
    ``encrypted_only``: its tokens are accepted only inside a JWE (docs/events.md).
    """

    kid: str
    source: str
    alg: str
    public_jwk: dict[str, Any] = field(hash=False)
    not_before: datetime | None = None
    not_after: datetime | None = None
    typs: frozenset[str] | None = None
    department: str | None = None
    encrypted_only: bool = False

    def values(self) -> dict[str, Any]:
        return {
            "kid": self.kid, "source": self.source, "alg": self.alg,
            "public_jwk": self.public_jwk, "not_before": self.not_before,
            "not_after": self.not_after,
            "allowed_typs": sorted(self.typs) if self.typs is not None else None,
            "department": self.department,
            "encrypted_only": self.encrypted_only,
        }


def _typs(value: Collection[str] | None) -> frozenset[str] | None:
    return frozenset(value) if value is not None else None


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
        typs=_typs(row.allowed_typs),
        department=row.department,
        encrypted_only=bool(row.encrypted_only),
    )


def _insert(conn: Connection, key: NewKey) -> bool:
    """Register one key inside ``conn``'s transaction; see ``add_key``."""
    stmt = (
        insert(SigningKeyRow)
        .values(**key.values())
        .on_conflict_do_nothing(index_elements=["kid"])
        .returning(SigningKeyRow.kid)
    )
    if conn.execute(stmt).first():
        return True
    existing = conn.execute(
        select(SigningKeyRow.source, SigningKeyRow.alg, SigningKeyRow.public_jwk,
               SigningKeyRow.allowed_typs, SigningKeyRow.department, SigningKeyRow.encrypted_only)
        .where(SigningKeyRow.kid == key.kid)
    ).one()
    if (existing.source, existing.alg, existing.public_jwk) != (key.source, key.alg, key.public_jwk):
        raise KeyConflict(f"kid {key.kid!r} is already registered with a different key")
    if (_typs(existing.allowed_typs), existing.department) != (key.typs, key.department):
        raise KeyConflict(f"kid {key.kid!r} is already registered with a different binding "
                          "(schemas or department)")
    if existing.encrypted_only != key.encrypted_only:
        raise KeyConflict(
            f"kid {key.kid!r} is already registered "
            f"{'requiring' if existing.encrypted_only else 'not requiring'} encryption; change "
            f"that with `attest keys require-encryption {key.kid}"
            f"{'' if key.encrypted_only else ' --off'}`")
    return False


def add_key(
    url: str,
    kid: str,
    source: str,
    alg: str,
    public_jwk: dict[str, Any],
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    *,
    typs: Collection[str] | None = None,
    department: str | None = None,
    encrypted_only: bool = False,
) -> bool:
    """Register a key. True when added, False when the identical key was already there."""
    key = NewKey(kid, source, alg, public_jwk, not_before, not_after, _typs(typs), department,
                 encrypted_only)
    return add_keys(url, [key])[0]


def add_keys(url: str, keys: Sequence[NewKey]) -> list[bool]:
    """Register several keys in one transaction: all of them, or (on any error) none.

    Per key: True when added, False when the identical key was already there. A kid
    registered with other content raises ``KeyConflict``, a value the database refuses
    ``KeyRefused``; either way nothing is registered.
    """

    def write() -> list[bool]:
        with engine_for(url).begin() as conn:
            return [_insert(conn, key) for key in keys]

    try:
        return run_db(write)
    except DBAPIError as exc:  # not a lost connection (run_db raised that as unavailable)
        cause = str(exc.orig).strip().splitlines()[0][:200] if exc.orig else type(exc).__name__
        raise KeyRefused(f"the registry refused the keys ({cause})") from exc


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


def set_encrypted_only(url: str, kid: str, required: bool) -> tuple[KeyRecord, bool] | None:
    """Require (or stop requiring) encryption of the tokens ``kid`` signs.

    (the key as it is now, whether this changed it); None when no such kid. Allowed on a
    revoked key too: the flag also decides what a replay of its old tokens accepts.
    """

    def write() -> tuple[KeyRecord, bool] | None:
        with engine_for(url).begin() as conn:
            changed = conn.execute(
                update(SigningKeyRow)
                .where(SigningKeyRow.kid == kid, SigningKeyRow.encrypted_only.is_not(required))
                .values(encrypted_only=required)
            ).rowcount
            row = conn.execute(select(SigningKeyRow).where(SigningKeyRow.kid == kid)).first()
        return (_record(SigningKeyRow(**row._mapping)), bool(changed)) if row else None

    return run_db(write)
