"""The access service: the one room where identity, policy, approvals and audit meet.

``AccessService`` holds the only copy of the tiers' private keys that any process loads, the
policies it read at start (a caller never names a policy), the issuer's public keys, and its
own attestation key. Every operation takes an already verified ``Identity``; the HTTP layer
(``access.app``) only authenticates and translates.

A read, in order (``read``):

1. a stated purpose; a role the token carries and the policy gives the token's department;
2. with a request id: the requester's own, unexpired request, its decisions re-verified;
3. per field, a decision (public / granted / approved / masked with a reason);
4. rows fetched under ``SET LOCAL ROLE`` of the department (column grants, row security);
5. the ``fields.read`` audit record appended to the audit log and **committed**; if that
   fails, the read is refused and nothing is decrypted;
6. only then, the allowed fields are decrypted, with the role's tiers only.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from access.approvals import (
    AccessRequest,
    ApprovalStatus,
    ApproverKey,
    RequestState,
    ServiceAttestor,
    StoredDecision,
    decision_attestation_body,
    evaluate,
    key_attestation_body,
    new_request_id,
    read_decision,
)
from access.errors import AccessError, AuditUnavailable, Conflict, Forbidden, NotFound, RateLimited
from access.identity import Identity
from access.policy import AccessDecision, AccessPolicy, AccessReason, Role
from access.ratelimit import SlidingWindowLimit
from access.views import (
    FieldView,
    NewRequest,
    ReadQuery,
    ReadResult,
    RecordView,
    TierLimitedKeyring,
)
from audit.log import append_records
from protection.errors import FieldProtectionError
from protection.fields import subject_reference
from protection.keyring import Keyring
from protection.reader import FieldReader
from protection.tiers import FieldSpec, SchemaProtection
from schemas.audit import AuditAction, AuditRecord, audit_id_for
from storage import access_requests as store
from storage.protected import RowFilter, read_protected

if TYPE_CHECKING:
    from access.letter_payloads import DeadLetters

log = logging.getLogger("attest.access")

#: The longest text a refusal's audit record keeps of a column (actor, correlation: 200) and
#: of any one value in its detail (a purpose may have 500 characters).
_REFUSAL_TEXT_MAX = 200
_REFUSAL_DETAIL_MAX = 500


def _safe_text(text: str, limit: int = _REFUSAL_TEXT_MAX) -> str:
    """``text`` fit for an audit record whatever a caller put in it: anything not printable (a
    NUL, a control character, a lone surrogate) escaped as ``\\uXXXX``, then cut to ``limit``.
    A refusal's record must always be writable: a probe that could break its own record would
    go unseen."""
    escaped = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)
    return escaped if len(escaped) <= limit else escaped[:limit - 3] + "..."


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return _safe_text(value, _REFUSAL_DETAIL_MAX)
    if isinstance(value, Mapping):
        return {_safe_text(str(k)): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return value


def _claimed_decision(token: str) -> str | None:
    """What a decision JWS *says* it decides, unverified: only to name a refusal's record."""
    try:
        part = token.split(".")[1]
        payload = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError, TypeError):
        return None
    decision = payload.get("decision") if isinstance(payload, dict) else None
    return decision if decision in ("approve", "deny") else None


class AccessService:
    """Decides and performs reads, requests and approvals for authenticated people."""

    def __init__(
        self, *, database_url: str, policies: Sequence[AccessPolicy], keyring: Keyring,
        attestor: ServiceAttestor, lookups_per_minute: int = 30,
        request_max_age: timedelta = timedelta(days=30),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        append_audit: Callable[[str, list[AuditRecord]], int] = append_records,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        self._url = database_url
        self._policies = tuple(policies)
        self._keyring = keyring
        self._attestor = attestor
        self._limit = SlidingWindowLimit(lookups_per_minute)
        self._max_age = request_max_age
        self._clock = clock
        self._append = append_audit
        self._lock = threading.Lock()
        #: where ``dead_letters.payload`` reads letters (access/letter_payloads.py); None: nowhere
        self.dead_letters = dead_letters
        #: fields decrypted since start (what the fail-closed test watches)
        self.fields_opened = 0

    def __repr__(self) -> str:
        return f"AccessService(policies={[p.name for p in self._policies]}, keyring={self._keyring!r})"

    # -- identity -> role ----------------------------------------------------------------------

    def role_of(self, identity: Identity, wanted: str | None = None) -> tuple[AccessPolicy, Role]:
        """The policy role this token acts as: one of its roles, of its department."""
        usable = [(p, r) for p in self._policies for r in p.roles.values()
                  if r.name in identity.roles and r.department == identity.department]
        if wanted is not None:
            usable = [(p, r) for p, r in usable if r.name == wanted]
        if not usable:
            which = f"role {wanted!r}" if wanted else "any reading role"
            raise Forbidden(f"your token does not give you {which} in department "
                            f"{identity.department!r}")
        if len(usable) > 1:
            raise Forbidden("your token carries several reading roles; name one with 'role'")
        return usable[0]

    def _policy_of_role(self, role_name: str) -> AccessPolicy:
        for policy in self._policies:
            if role_name in policy.roles:
                return policy
        raise NotFound(f"no loaded policy has role {role_name!r}")

    def _subject_ref(self, domain: str, identifier: str) -> bytes:
        """The identifier's blind index, computed here: readers never hold index keys."""
        try:
            return subject_reference(self._keyring, domain, identifier)
        except ValueError as exc:
            raise AccessError(str(exc)) from None

    def is_approver(self, identity: Identity, policy: AccessPolicy) -> bool:
        return bool(policy.approver_roles & identity.roles)

    def _audit(self, record: AuditRecord) -> None:
        """Append and commit, or refuse (fail closed): nothing proceeds without its record."""
        try:
            self._append(self._url, [record])
        except Exception as exc:  # noqa: BLE001 - any failure to record means no action
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise AuditUnavailable(f"refused: the audit record could not be committed ({first})") \
                from None

    def _record(self, identity: Identity, action: AuditAction, correlation: str,
                subject_ids: list[str], detail: dict[str, Any]) -> AuditRecord:
        now = self._clock()
        return AuditRecord(
            audit_id=audit_id_for(action.value, correlation, now.isoformat()), time=now,
            actor=identity.actor, action=action.value, correlation_id=correlation,
            subject_ids=subject_ids,
            detail={"person": identity.subject, "issuer": identity.issuer,
                    "token_id": identity.token_id, **detail},
        )

    # -- requests and approvals ------------------------------------------------------------------

    def status_of(self, request: AccessRequest) -> ApprovalStatus:
        policy = self._policy_of_role(request.role)
        decisions = store.decisions_for(self._url, request.request_id)
        keys = store.approver_keys(self._url, {d.approver_kid for d in decisions})
        return evaluate(request, decisions, keys, self._attestor, policy.approver_roles,
                        self._clock())

    def create_request(self, identity: Identity, new: NewRequest) -> tuple[AccessRequest, ApprovalStatus]:
        """A new access request, or a refusal; a refusal is audited too (``access.requested``,
        outcome ``rejected``)."""
        try:
            return self._create_request(identity, new)
        except AuditUnavailable:
            raise
        except AccessError as refusal:
            self._audit_refused(identity, AuditAction.ACCESS_REQUESTED, str(uuid.uuid4()), {
                "role": new.role, "department": identity.department, "purpose": new.purpose,
                "typ": new.typ, "fields": list(new.fields)}, refusal)
            raise

    def _create_request(self, identity: Identity, new: NewRequest
                        ) -> tuple[AccessRequest, ApprovalStatus]:
        if not new.purpose.strip():
            raise AccessError("a request needs a stated purpose")
        policy, role = self.role_of(identity, new.role)
        try:
            schema = policy.catalog.schema(new.typ)
            specs = [schema.field(name) for name in new.fields]
        except FieldProtectionError as exc:
            raise AccessError(str(exc)) from None
        if not specs:
            raise AccessError("a request names at least one field")
        levels = []
        for spec in specs:
            level = role.level_for(spec)
            if not spec.protected or level is None:
                raise Forbidden(f"role {role.name!r} may not read {spec.schema}.{spec.name}")
            levels.append(level)
        if new.valid_for <= timedelta(0) or new.valid_for > self._max_age:
            raise AccessError(f"a request is valid for at most {self._max_age.days} days")
        self._limit.take(identity.subject)
        ref = self._subject_ref(schema.subject_domain, new.subject)
        request = AccessRequest(
            request_id=new_request_id(), requester=identity.subject, department=identity.department,
            role=role.name, purpose=new.purpose.strip(), typ=schema.typ,
            subject_domain=schema.subject_domain, subject_ref=ref,
            fields=tuple(sorted(spec.name for spec in specs)), level=max(levels),
            expires_at=(self._clock() + new.valid_for).replace(microsecond=0),
        )
        self._audit(self._record(identity, AuditAction.ACCESS_REQUESTED, request.request_id,
                                 [request.request_id], {
                                     "role": role.name, "department": identity.department,
                                     "purpose": request.purpose, "typ": request.typ,
                                     "fields": list(request.fields), "level": request.level,
                                     "expires_at": request.expires_at.isoformat(),
                                     "digest": request.digest}))
        store.insert_request(self._url, request)
        return request, self.status_of(request)

    def visible_request(self, identity: Identity, request_id: str) -> AccessRequest:
        """The request, if ``identity`` made it or may decide on it."""
        request = store.load_request(self._url, request_id)
        if request is None:
            raise NotFound(f"no access request {request_id}")
        if request.requester != identity.subject and not self.is_approver(
                identity, self._policy_of_role(request.role)):
            raise NotFound(f"no access request {request_id}")
        return request

    def list_requests(self, identity: Identity) -> list[tuple[AccessRequest, ApprovalStatus]]:
        approver = any(self.is_approver(identity, p) for p in self._policies)
        requests = store.list_requests(self._url, None if approver else identity.subject)
        return [(r, self.status_of(r)) for r in requests
                if r.requester == identity.subject
                or self.is_approver(identity, self._policy_of_role(r.role))]

    def register_key(self, identity: Identity, jwk: Mapping[str, Any]) -> ApproverKey:
        """Register the caller's approval-signing public key (Ed25519), attested by the service;
        a refusal is audited too (``access.key_registered``, outcome ``rejected``)."""
        try:
            return self._register_key(identity, jwk)
        except AuditUnavailable:
            raise
        except AccessError as refusal:
            kid = None
            with contextlib.suppress(JoseError, ValueError, TypeError):
                kid = OKPKey.import_key(dict(jwk)).thumbprint()
            self._audit_refused(identity, AuditAction.APPROVER_KEY_REGISTERED, str(uuid.uuid4()),
                                {"kid": kid}, refusal)
            raise

    def _register_key(self, identity: Identity, jwk: Mapping[str, Any]) -> ApproverKey:
        try:
            key = OKPKey.import_key(dict(jwk))
        except (JoseError, ValueError, TypeError):
            raise AccessError("not a usable public JWK") from None
        if key.is_private or key.as_dict().get("crv") != "Ed25519":
            raise AccessError("register an Ed25519 public key (never the private key)")
        public = {k: v for k, v in key.as_dict(private=False).items() if k in ("kty", "crv", "x")}
        kid = key.thumbprint()
        existing = store.approver_keys(self._url, [kid])
        if kid in existing:
            if existing[kid].subject != identity.subject:
                raise Conflict("this key is registered to someone else")
            return existing[kid]
        if store.approver_keys(self._url, subject=identity.subject):
            # One key per person: a stolen token must not add a key of its own to a person
            # who already signs with theirs. Replacing a key is an operator's act.
            raise Conflict("you already have a registered approval key; ask an operator to "
                           "replace it")
        registered = ApproverKey(kid, identity.subject, public,
                                 self._attestor.attest(key_attestation_body(kid, identity.subject,
                                                                            public)))
        self._audit(self._record(identity, AuditAction.APPROVER_KEY_REGISTERED, kid, [kid],
                                 {"kid": kid}))
        if not store.insert_approver_key(self._url, registered):
            # Another registration won the race (the database holds one key per person and
            # one person per key: migration 0013's unique index on the subject).
            winner = store.approver_keys(self._url, [kid]).get(kid)
            if winner is not None and winner.subject == identity.subject:
                return winner
            raise Conflict("you already have a registered approval key; ask an operator to "
                           "replace it")
        return registered

    def decide(self, identity: Identity, request_id: str, token: str,
               subject: str | None = None) -> ApprovalStatus:
        """Record an approver's signed decision after checking everything it claims, including
        that ``subject`` (the identifier the approver names) is the request's subject; a refusal
        is audited too (``access.approved`` or ``access.denied``, outcome ``rejected``)."""
        try:
            return self._record_decision(identity, request_id, token, subject)
        except AuditUnavailable:
            raise
        except AccessError as refusal:
            claimed = _claimed_decision(token)
            action = AuditAction.ACCESS_DENIED if claimed == "deny" else AuditAction.ACCESS_APPROVED
            self._audit_refused(identity, action, request_id, {
                "request_id": request_id, "decision": claimed,
                "subject_named": subject is not None}, refusal)
            raise

    def _record_decision(self, identity: Identity, request_id: str, token: str,
                         subject: str | None) -> ApprovalStatus:
        request = store.load_request(self._url, request_id)
        if request is None:
            raise NotFound(f"no access request {request_id}")
        policy = self._policy_of_role(request.role)
        if not self.is_approver(identity, policy):
            raise Forbidden(f"you hold none of the approver roles of policy {policy.name!r}")
        if identity.subject == request.requester:
            raise Forbidden("a requester cannot decide on their own request")
        if self._clock() >= request.expires_at:
            raise Conflict("the request has expired")
        keys = store.approver_keys(self._url, subject=identity.subject)
        signed = next(((k, p) for k in keys.values()
                       if (p := read_decision(token, k.jwk)) is not None), None)
        if signed is None:
            raise Forbidden("the decision is not signed by a key registered to you")
        key, payload = signed
        if payload.get("request_id") != request.request_id or payload.get("digest") != request.digest:
            raise Forbidden("the decision signs another request (request id or digest differ)")
        if payload.get("approver") != identity.subject or payload.get("decision") not in ("approve",
                                                                                          "deny"):
            raise Forbidden("the decision names another approver or no decision")
        # The approver names the person; the service checks it is the request's subject. The
        # digest covers only a blind index the approver cannot compute, and the purpose is the
        # requester's own words: without this, an approver approves a subject they never saw.
        if subject is None:
            if payload["decision"] == "approve":
                raise Forbidden("name the request's subject (the person's identifier) to approve it")
        else:
            self._limit.take(identity.subject)  # each check is a lookup by identifier
            if not hmac.compare_digest(self._subject_ref(request.subject_domain, subject),
                                       request.subject_ref):
                raise Forbidden("the subject you named is not the subject of this request; "
                                "nothing was recorded")
        if any(d.approver == identity.subject for d in store.decisions_for(self._url, request_id)):
            raise Conflict("you have already decided on this request")
        decision = StoredDecision(
            approval_id=str(uuid.uuid4()), request_id=request.request_id,
            approver=identity.subject, decision=str(payload["decision"]), approver_kid=key.kid,
            approver_department=identity.department, approver_roles=tuple(sorted(identity.roles)),
            jws=token, attestation="")
        decision = replace(decision,
                           attestation=self._attestor.attest(decision_attestation_body(decision)))
        action = AuditAction.ACCESS_APPROVED if decision.decision == "approve" else AuditAction.ACCESS_DENIED
        self._audit(self._record(identity, action, request.request_id, [request.request_id], {
            "approval_id": decision.approval_id, "kid": key.kid, "digest": request.digest,
            "requester": request.requester, "subject_checked": subject is not None}))
        store.insert_decision(self._url, decision)
        return self.status_of(request)

    # -- reads -------------------------------------------------------------------------------------

    def _decide(self, role: Role, spec: FieldSpec, grant: tuple[AccessRequest, ApprovalStatus] | None
                ) -> AccessDecision:
        if not spec.protected:
            return AccessDecision(spec, role.name, True, AccessReason.PUBLIC)
        level = role.level_for(spec)
        if level is None:
            return AccessDecision(spec, role.name, False, AccessReason.NOT_GRANTED)
        if spec.tier not in role.tiers:
            return AccessDecision(spec, role.name, False, AccessReason.TIER_NOT_HELD, level)
        if level == 1:
            return AccessDecision(spec, role.name, True, AccessReason.GRANTED, level)
        if grant is None:
            return AccessDecision(spec, role.name, False, AccessReason.APPROVAL_MISSING, level)
        request, status = grant
        if spec.schema != request.typ or spec.name not in request.fields:
            return AccessDecision(spec, role.name, False, AccessReason.APPROVAL_MISSING, level)
        reason = {RequestState.EXPIRED: AccessReason.EXPIRED,
                  RequestState.DENIED: AccessReason.DENIED}.get(status.state)
        if reason is not None:
            return AccessDecision(spec, role.name, False, reason, level)
        if status.state is RequestState.APPROVED and request.level >= level:
            return AccessDecision(spec, role.name, True, AccessReason.APPROVED, level,
                                  status.approval_ids)
        if level >= 3 and status.approvers:
            return AccessDecision(spec, role.name, False, AccessReason.SECOND_PERSON_REQUIRED, level)
        return AccessDecision(spec, role.name, False, AccessReason.APPROVAL_MISSING, level)

    def read(self, identity: Identity, query: ReadQuery) -> ReadResult:
        """A read, or a refusal; a refusal of an authenticated person is audited too."""
        try:
            return self._read(identity, query)
        except (Forbidden, NotFound, RateLimited) as refusal:
            self._audit_refusal(identity, query, refusal)
            raise

    def _audit_refusal(self, identity: Identity, query: ReadQuery, refusal: AccessError) -> None:
        self._audit_refused(identity, AuditAction.FIELDS_READ, str(uuid.uuid4()), {
            "reader": identity.subject, "role": query.role, "department": identity.department,
            "purpose": (query.purpose or "").strip(), "request_id": query.request_id,
            "filters": {"subject": query.subject is not None, "event_id": query.event_id,
                        "typ": query.typ, "source": query.source},
        }, refusal)

    def _audit_refused(self, identity: Identity, action: AuditAction, correlation: str,
                       detail: dict[str, Any], refusal: AccessError) -> None:
        """Record a refusal (outcome ``rejected``, reason the refusal's kind). Every value a
        caller chose is escaped and cut (``_safe``), so no input can make the record unwritable.
        Best effort only against the database itself: the refusal stands either way, and a
        record that could not be committed is logged."""
        record = self._record(identity, action, _safe_text(correlation), [],
                              _safe({**detail, "refused": str(refusal)}))
        record = record.model_copy(update={
            "actor": _safe_text(record.actor), "outcome": "rejected",
            "reason": type(refusal).__name__.lower(), "detail": _safe(record.detail)})
        try:
            self._audit(record)
        except AuditUnavailable as exc:
            log.warning("a refusal (%s) could not be audited: %s", record.reason, exc)

    def _read(self, identity: Identity, query: ReadQuery) -> ReadResult:
        if not query.purpose or not query.purpose.strip():
            raise AccessError("a read needs a stated purpose")
        policy, role = self.role_of(identity, query.role)
        department = policy.department_of(role)
        catalog = policy.catalog
        typs = sorted({typ for typ, _ in role.fields})
        grant: tuple[AccessRequest, ApprovalStatus] | None = None
        refs: dict[str, bytes] = {}
        if query.request_id is not None:
            request = store.load_request(self._url, query.request_id)
            if request is None or request.requester != identity.subject:
                raise NotFound(f"you made no access request {query.request_id}")
            if request.role != role.name:
                raise Forbidden(f"request {request.request_id} was made for role {request.role!r}")
            grant = (request, self.status_of(request))
            refs[request.subject_domain] = request.subject_ref
            typs = [request.typ]
            if query.subject is not None and self._subject_ref(
                    request.subject_domain, query.subject) != request.subject_ref:
                raise Forbidden("the subject is not the one the request names")
        elif query.subject is not None:
            self._limit.take(identity.subject)
            for typ in typs:
                domain = catalog.schema(typ).subject_domain
                refs.setdefault(domain, self._subject_ref(domain, query.subject))
        if query.typ is not None:
            if query.typ not in typs:
                raise Forbidden(f"role {role.name!r} reads no protected field of {query.typ} here")
            typs = [query.typ]

        fetched = []
        decisions: dict[str, dict[str, AccessDecision]] = {}
        for typ in typs:
            schema = catalog.schema(typ)
            decided = {name: self._decide(role, spec, grant) for name, spec in schema.fields.items()}
            decisions[typ] = decided
            index = refs.get(schema.subject_domain) if refs else None
            if refs and (index is None or schema.field(schema.subject_field).index_column is None):
                continue
            columns = [n for n, d in decided.items() if d.allowed and d.protected]
            rows, keys = read_protected(
                self._url, db_role=department.db_role, schema=schema, columns=columns,
                where=RowFilter(event_id=query.event_id, subject_index=index, source=query.source,
                                limit=query.limit),
                key_ids_of=FieldReader.key_ids)
            fetched.append((schema, decided, rows, keys))

        read_id = str(uuid.uuid4())
        record_ids = [row.event_id for _, _, rows, _ in fetched for row in rows]
        audit = self._record(identity, AuditAction.FIELDS_READ, read_id, record_ids, {
            "reader": identity.subject, "role": role.name, "department": department.name,
            "purpose": query.purpose.strip(), "policy": policy.name,
            "fields": sorted(f"{t}.{n}" for t, ds in decisions.items() for n, d in ds.items()
                             if d.allowed and d.protected),
            "masked": sorted(f"{t}.{n}:{d.reason.value}" for t, ds in decisions.items()
                             for n, d in ds.items() if not d.allowed),
            "records": len(record_ids),
            "request_id": grant[0].request_id if grant else None,
            "approvals": sorted({a for ds in decisions.values() for d in ds.values()
                                 for a in d.approval_ids}),
            "filters": {"subject": query.subject is not None, "event_id": query.event_id,
                        "typ": query.typ, "source": query.source},
        })
        self._audit(audit)  # committed, or AuditUnavailable: nothing below runs
        reader = FieldReader(TierLimitedKeyring(self._keyring, role.tiers), catalog)
        records = [self._view(reader, schema, decided, row, keys)
                   for schema, decided, rows, keys in fetched for row in rows]
        return ReadResult(read_id, role.name, records, audit)

    def _view(self, reader: FieldReader, schema: SchemaProtection,
              decided: dict[str, AccessDecision], row: Any, keys: Any) -> RecordView:
        allowed = {n: d for n, d in decided.items() if d.allowed and d.protected}
        opened = reader.open_fields(schema.typ, row.event_id, row.ciphertexts, allowed, keys,
                                    department=row.department)
        with self._lock:
            self.fields_opened += sum(1 for c in row.ciphertexts.values() if c is not None)
        views = []
        for name, spec in schema.fields.items():
            decision = decided[name]
            if not spec.protected:
                views.append(FieldView(name, spec.tier.label,
                                       "public" if name in row.public else "absent",
                                       row.public.get(name)))
            elif not decision.allowed:
                views.append(FieldView(name, spec.tier.label, "masked", note=decision.reason.value))
            elif opened[name].forgotten:
                views.append(FieldView(name, spec.tier.label, "forgotten", note=opened[name].forgotten))
            elif row.ciphertexts.get(name) is None:
                views.append(FieldView(name, spec.tier.label, "absent"))
            else:
                views.append(FieldView(name, spec.tier.label, "clear", opened[name].value))
        return RecordView(row.event_id, row.typ, row.source, row.issued_at, row.department, views)
