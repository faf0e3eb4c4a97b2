"""Repositories of the access service: requests, approvers' keys, decisions (migration 0006).

Only SQL here. Rows are evidence, not authority: ``access.approvals.evaluate`` re-checks
every signature when a read relies on them.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from access.approvals import AccessRequest, ApproverKey, StoredDecision
from storage.db import engine_for, run_db
from storage.protected_models import AccessRequestRow, ApprovalRow, ApproverKeyRow


def insert_request(url: str, request: AccessRequest) -> None:
    def write() -> None:
        with engine_for(url).begin() as conn:
            conn.execute(insert(AccessRequestRow).values(
                id=uuid.UUID(request.request_id), requester=request.requester,
                department=request.department, role=request.role, purpose=request.purpose,
                typ=request.typ, subject_domain=request.subject_domain,
                subject_ref=request.subject_ref, fields=list(request.fields), level=request.level,
                expires_at=request.expires_at, digest=request.digest))

    run_db(write)


def _request(row: Any) -> AccessRequest:
    """A row of ``select(AccessRequestRow)`` (columns by name) as a request."""
    return AccessRequest(
        request_id=str(row.id), requester=row.requester, department=row.department,
        role=row.role, purpose=row.purpose, typ=row.typ, subject_domain=row.subject_domain,
        subject_ref=bytes(row.subject_ref), fields=tuple(row.fields), level=int(row.level),
        expires_at=row.expires_at)


def load_request(url: str, request_id: str) -> AccessRequest | None:
    try:
        key = uuid.UUID(request_id)
    except ValueError:
        return None

    def read() -> AccessRequest | None:
        with engine_for(url).connect() as conn:
            row = conn.execute(select(AccessRequestRow).where(AccessRequestRow.id == key)).first()
        return _request(row) if row is not None else None

    return run_db(read)


def list_requests(url: str, requester: str | None = None, limit: int = 100) -> list[AccessRequest]:
    """Newest first; only ``requester``'s when given."""
    stmt = select(AccessRequestRow).order_by(AccessRequestRow.created_at.desc()).limit(limit)
    if requester is not None:
        stmt = stmt.where(AccessRequestRow.requester == requester)

    def read() -> list[AccessRequest]:
        with engine_for(url).connect() as conn:
            return [_request(r) for r in conn.execute(stmt)]

    return run_db(read)


def insert_approver_key(url: str, key: ApproverKey) -> bool:
    """Register a key; False when that kid, or a key of that subject, is already registered
    (nothing changes). Both are unique in the database (the kid is the primary key, the subject
    has a unique index since migration 0013), so concurrent registrations store one key."""

    def write() -> bool:
        with engine_for(url).begin() as conn:
            done = conn.execute(
                pg_insert(ApproverKeyRow).values(kid=key.kid, subject=key.subject, jwk=dict(key.jwk),
                                                 attestation=key.attestation)
                .on_conflict_do_nothing().returning(ApproverKeyRow.kid)
            ).first()
        return done is not None

    return run_db(write)


def approver_keys(url: str, kids: Collection[str] | None = None, subject: str | None = None
                  ) -> dict[str, ApproverKey]:
    stmt = select(ApproverKeyRow)
    if kids is not None:
        stmt = stmt.where(ApproverKeyRow.kid.in_(list(kids)))
    if subject is not None:
        stmt = stmt.where(ApproverKeyRow.subject == subject)

    def read() -> dict[str, ApproverKey]:
        with engine_for(url).connect() as conn:
            return {r.kid: ApproverKey(r.kid, r.subject, dict(r.jwk), r.attestation)
                    for r in conn.execute(stmt)}

    return run_db(read)


def insert_decision(url: str, decision: StoredDecision) -> None:
    def write() -> None:
        with engine_for(url).begin() as conn:
            conn.execute(insert(ApprovalRow).values(
                id=uuid.UUID(decision.approval_id), request_id=uuid.UUID(decision.request_id),
                approver=decision.approver, decision=decision.decision,
                approver_kid=decision.approver_kid,
                approver_department=decision.approver_department,
                approver_roles=list(decision.approver_roles), jws=decision.jws,
                attestation=decision.attestation))

    run_db(write)


def decisions_for(url: str, request_id: str) -> list[StoredDecision]:
    def read() -> list[StoredDecision]:
        with engine_for(url).connect() as conn:
            rows = conn.execute(select(ApprovalRow).where(
                ApprovalRow.request_id == uuid.UUID(request_id)).order_by(ApprovalRow.created_at))
            return [StoredDecision(
                approval_id=str(r.id), request_id=str(r.request_id), approver=r.approver,
                decision=r.decision, approver_kid=r.approver_kid,
                approver_department=r.approver_department,
                approver_roles=tuple(r.approver_roles), jws=r.jws, attestation=r.attestation)
                for r in rows]

    return run_db(read)
