"""Approvals as a control group (Vault's model): pure functions, checked again at every read.

A request names requester, role, purpose, subject (its blind index), fields and expiry; its
``digest`` (SHA-256 of the RFC 8785 encoding, request id included) is what approvers sign. An
approver signs a small JWS with *their own* key; the access service checks it against the key
registered to that person and attests both the registration and the recorded decision with
its own key. ``evaluate`` recomputes everything from the stored rows at read time, so a row
inserted by SQL (no valid attestation, or no valid approver signature over *this* request's
digest) counts for nothing.

Level 2 needs one authorised approver who is not the requester; level 3 two distinct ones,
neither the requester. One valid denial vetoes the request; an expired request unlocks nothing.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import rfc8785
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

DECISION_TYP = "attest.access-decision+jws"
ATTESTATION_TYP = "attest.access-attestation+jws"
DECISIONS = ("approve", "deny")
#: distinct approvers a level needs (level 1 needs none)
APPROVERS_NEEDED = {1: 0, 2: 1, 3: 2}


class RequestState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """What a requester asks for; every field is covered by ``digest``."""

    request_id: str
    requester: str
    department: str
    role: str
    purpose: str
    typ: str
    subject_domain: str
    subject_ref: bytes = field(repr=False)
    fields: tuple[str, ...]
    level: int
    expires_at: datetime

    @property
    def digest(self) -> str:
        return request_digest(self)


def request_digest(request: AccessRequest) -> str:
    """SHA-256 (hex) of the request's RFC 8785 encoding: what approvers sign."""
    body = {
        "request_id": request.request_id, "requester": request.requester,
        "department": request.department, "role": request.role, "purpose": request.purpose,
        "typ": request.typ, "subject_domain": request.subject_domain,
        "subject_ref": request.subject_ref.hex(), "fields": sorted(request.fields),
        "level": request.level, "expires_at": _utc(request.expires_at),
    }
    return hashlib.sha256(rfc8785.dumps(body)).hexdigest()


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds")


# -- signing and checking ---------------------------------------------------------------------


def _sign(payload: Mapping[str, Any], key: OKPKey, typ: str) -> str:
    header = {"alg": "Ed25519", "kid": key.thumbprint(), "typ": typ}
    return jws.serialize_compact(header, rfc8785.dumps(dict(payload)), key, algorithms=["Ed25519"])


def _open(token: str, public: OKPKey, typ: str) -> dict[str, Any] | None:
    """The payload of a JWS signed by ``public``'s private key with header ``typ``, else None."""
    try:
        compact = jws.deserialize_compact(token, public, algorithms=["Ed25519"])
        if compact.protected.get("typ") != typ:
            return None
        payload = json.loads(compact.payload)
    except (JoseError, ValueError, TypeError):
        return None
    return payload if isinstance(payload, dict) else None


def sign_decision(request_id: str, digest: str, decision: str, approver: str, key: OKPKey,
                  now: datetime | None = None) -> str:
    """What an approver's client sends: a JWS by their own key over the request's digest."""
    if decision not in DECISIONS:
        raise ValueError(f"a decision is one of {DECISIONS}")
    payload = {"request_id": request_id, "digest": digest, "decision": decision,
               "approver": approver, "iat": int((now or datetime.now(UTC)).timestamp())}
    return _sign(payload, key, DECISION_TYP)


def read_decision(token: str, public_jwk: Mapping[str, Any]) -> dict[str, Any] | None:
    """The decision's payload if the JWS verifies under ``public_jwk``, else None."""
    try:
        public = OKPKey.import_key(dict(public_jwk))
    except (JoseError, ValueError, TypeError):
        return None
    return _open(token, public, DECISION_TYP)


def key_id(public_jwk: Mapping[str, Any]) -> str:
    """A key's id: its RFC 7638 thumbprint."""
    return OKPKey.import_key(dict(public_jwk)).thumbprint()


class ServiceAttestor:
    """The access service's own Ed25519 key: it attests what it verified (registrations, decisions)."""

    def __init__(self, key: OKPKey) -> None:
        if not key.is_private:
            raise ValueError("the service attestor needs its private key")
        self._key = key
        self._public = OKPKey.import_key(key.as_dict(private=False))

    def __repr__(self) -> str:
        return f"ServiceAttestor(kid={self._key.thumbprint()!r})"

    def attest(self, payload: Mapping[str, Any]) -> str:
        return _sign(payload, self._key, ATTESTATION_TYP)

    def attested(self, token: str, expected: Mapping[str, Any]) -> bool:
        """Whether ``token`` is this service's attestation of exactly ``expected``."""
        payload = _open(token, self._public, ATTESTATION_TYP)
        return payload is not None and payload == json.loads(rfc8785.dumps(dict(expected)))


def key_attestation_body(kid: str, subject: str, jwk: Mapping[str, Any]) -> dict[str, Any]:
    return {"what": "approver-key", "kid": kid, "subject": subject, "jwk": dict(jwk)}


# -- stored approvals, evaluated at read time ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApproverKey:
    kid: str
    subject: str
    jwk: Mapping[str, Any]
    attestation: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class StoredDecision:
    """One approval or denial as stored; nothing in it is trusted until ``evaluate`` checks it."""

    approval_id: str
    request_id: str
    approver: str
    decision: str
    approver_kid: str
    approver_department: str
    approver_roles: tuple[str, ...]
    jws: str = field(repr=False)
    attestation: str = field(repr=False)


def decision_attestation_body(d: StoredDecision) -> dict[str, Any]:
    return {"what": "decision", "approval_id": d.approval_id, "request_id": d.request_id,
            "approver": d.approver, "decision": d.decision, "approver_kid": d.approver_kid,
            "approver_department": d.approver_department,
            "approver_roles": sorted(d.approver_roles),
            "jws_sha256": hashlib.sha256(d.jws.encode("ascii")).hexdigest()}


@dataclass(frozen=True, slots=True)
class ApprovalStatus:
    """What the stored decisions of a request amount to, after every check."""

    state: RequestState
    level: int
    approvers: tuple[str, ...]  # distinct valid approvers
    approval_ids: tuple[str, ...]
    denied_by: tuple[str, ...] = ()
    ignored: tuple[tuple[str, str], ...] = ()  # (approval id, why it did not count)

    @property
    def needed(self) -> int:
        return APPROVERS_NEEDED[self.level]


def check_decision(
    request: AccessRequest, d: StoredDecision, keys: Mapping[str, ApproverKey],
    attestor: ServiceAttestor, approver_roles: frozenset[str],
) -> str | None:
    """Why this stored decision does not count for ``request`` (None: it counts)."""
    if d.request_id != request.request_id:
        return "another_request"
    if not attestor.attested(d.attestation, decision_attestation_body(d)):
        return "not_attested"
    key = keys.get(d.approver_kid)
    if key is None or key.subject != d.approver or not attestor.attested(
            key.attestation, key_attestation_body(key.kid, key.subject, key.jwk)):
        return "unregistered_key"
    payload = read_decision(d.jws, key.jwk)
    if payload is None:
        return "bad_signature"
    if (payload.get("request_id") != request.request_id or payload.get("digest") != request.digest
            or payload.get("approver") != d.approver or payload.get("decision") != d.decision):
        return "other_content"
    if d.approver == request.requester:
        return "requester"
    if not approver_roles.intersection(d.approver_roles):
        return "not_an_approver"
    return None


def evaluate(
    request: AccessRequest, decisions: Iterable[StoredDecision], keys: Mapping[str, ApproverKey],
    attestor: ServiceAttestor, approver_roles: frozenset[str], now: datetime,
) -> ApprovalStatus:
    """The request's state from its stored decisions, every signature checked again."""
    approvers: dict[str, str] = {}
    denied: list[str] = []
    ignored: list[tuple[str, str]] = []
    for d in decisions:
        why = check_decision(request, d, keys, attestor, approver_roles)
        if why is not None:
            ignored.append((d.approval_id, why))
        elif d.decision == "deny":
            denied.append(d.approver)
        else:
            approvers.setdefault(d.approver, d.approval_id)
    if now >= request.expires_at:
        state = RequestState.EXPIRED
    elif denied:
        state = RequestState.DENIED
    elif len(approvers) >= APPROVERS_NEEDED[request.level]:
        state = RequestState.APPROVED
    else:
        state = RequestState.PENDING
    return ApprovalStatus(state, request.level, tuple(sorted(approvers)),
                          tuple(sorted(approvers.values())), tuple(sorted(set(denied))),
                          tuple(ignored))


def new_request_id() -> str:
    return str(uuid.uuid4())
