"""The access service's HTTP API (FastAPI). Routes authenticate and translate; nothing else.

The OpenAPI document (``GET /openapi.json``) is the contract; ``tests/access/test_api.py``
checks its paths and security scheme. Every route but ``/healthz`` needs a bearer access
token; department and roles come from it alone.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from access.approvals import AccessRequest, ApprovalStatus
from access.errors import AccessError
from access.identity import Identity, TokenVerifier, load_jwks
from access.issuer import jwks_path
from access.keys import load_attestor
from access.letter_payloads import as_json as letter_json
from access.letter_payloads import dead_letters_of, show_letter_payload
from access.policy import load_policy
from access.service import AccessService
from access.views import NewRequest, ReadQuery, ReadResult
from config.settings import Settings, secret_environ
from protection.errors import FieldIntegrityError, FieldProtectionError
from protection.keyring_sources import open_keyring
from security.verification import forbidden_character_field
from storage.errors import DatabaseRefused, DatabaseUnavailable, StorageError

log = logging.getLogger("attest.access")

_bearer = HTTPBearer(auto_error=False, description="An RFC 9068 JWT access token.")


# -- wire models -------------------------------------------------------------------------------


class WhoAmI(BaseModel):
    subject: str
    department: str
    roles: list[str]
    issuer: str
    expires_at: int


class _Body(BaseModel):
    """Request bodies refuse unknown fields: nothing a caller adds (a policy, a role list) is
    silently ignored, let alone believed."""

    model_config = ConfigDict(extra="forbid")


#: Text a caller writes into audit records: no control characters, no lone surrogates (either
#: would make the record unwritable, and a read whose refusal cannot be audited goes unseen).
def _printable(text: str) -> str:
    if forbidden_character_field(text) is not None:
        raise ValueError("control characters and lone surrogates are not accepted")
    return text


Purpose = Annotated[str, Field(max_length=500,
                               description="Why you read; recorded with the read. Required."),
                    AfterValidator(_printable)]
def _one_line(text: str) -> str:
    if not text.isprintable():
        raise ValueError("only printable characters are accepted (no tab, newline or control "
                         "character)")
    return text


#: A name (role, schema, source, field): printable, one line, short. Every string a body
#: carries is checked at the door, so nothing in it can make a refusal's audit record unwritable.
Name = Annotated[str, Field(max_length=128), AfterValidator(_one_line)]
#: An identifier (national id, account number): printable, one line, short; never recorded.
Identifier = Annotated[str, Field(max_length=256), AfterValidator(_one_line)]


def _printable_json(value: dict[str, Any]) -> dict[str, Any]:
    if forbidden_character_field(value) is not None:
        raise ValueError("control characters and lone surrogates are not accepted")
    return value


class ReadBody(_Body):
    purpose: Purpose
    role: Name | None = Field(None, description="One of your token's roles (when it has several).")
    subject: Identifier | None = Field(None, description="An identifier (national id, account); "
                                       "matched by blind index inside the service, rate-limited, "
                                       "never recorded.")
    event_id: uuid.UUID | None = None
    typ: Name | None = Field(None, description="Only this schema, e.g. attest.document.v1.")
    source: Name | None = None
    request_id: uuid.UUID | None = Field(None, description="Your approved access request (level "
                                         "2/3 fields).")
    limit: int = Field(20, ge=1, le=1000)


class DeadLetterPayloadBody(_Body):
    partition: int = Field(ge=0, le=2**31 - 1, description="The letter's partition of the "
                           "dead-letter topic (PARTITION of `attest dlq list`).")
    offset: int = Field(ge=0, le=2**63 - 1, description="The letter's offset (OFFSET).")
    purpose: Purpose


class DeadLetterPayloadOut(BaseModel):
    audit_id: str = Field(description="The dlq.payload_shown audit record, committed before "
                          "this answer.")
    topic: str
    partition: int
    offset: int
    reason: str = Field(description="Why the worker rejected it (the attest-reason header).")
    origin: str = Field(description="source topic/partition/offset, from its headers.")
    headers: dict[str, str]
    key: str | None = Field(description="The message key, base64 (null: none).")
    bytes: int
    sha256: str = Field(description="SHA-256 of the stored bytes, hex.")
    form: str = Field(description="jws (compact JWS), jwe (an encrypted token, returned as "
                      "stored, nothing opened) or other.")
    header: dict[str, Any] | None = Field(description="The claimed JOSE header, unverified.")
    payload: dict[str, Any] | None = Field(description="A JWS's JSON payload, unverified; null "
                                           "for a JWE or bytes that are not JSON.")
    value: str = Field(description="The stored bytes, base64.")


class FieldOut(BaseModel):
    name: str
    tier: str
    state: str = Field(description="public, clear, masked, forgotten or absent")
    value: Any = None
    note: str | None = None


class RecordOut(BaseModel):
    event_id: str
    typ: str
    source: str
    issued_at: datetime
    department: str
    fields: list[FieldOut]


class ReadOut(BaseModel):
    read_id: str = Field(description="The fields.read audit record's correlation id.")
    role: str
    records: list[RecordOut]


class RequestBody(_Body):
    purpose: Purpose
    typ: Name = Field(description="The schema, e.g. attest.document.v1.")
    subject: Identifier = Field(description="The subject's identifier; the service keeps only its "
                                "blind index.")
    fields: list[Name] = Field(min_length=1, max_length=64)
    role: Name | None = None
    valid_for_hours: float = Field(168.0, gt=0, le=24 * 366, allow_inf_nan=False)


class RequestOut(BaseModel):
    request_id: str
    requester: str
    department: str
    role: str
    purpose: str
    typ: str
    fields: list[str]
    level: int
    expires_at: datetime
    digest: str = Field(description="SHA-256 of the request (RFC 8785): what approvers sign.")
    state: str
    approvers: list[str]
    needed: int
    denied_by: list[str]


class KeyBody(_Body):
    jwk: Annotated[dict[str, Any], AfterValidator(_printable_json)] = Field(
        description="Your Ed25519 public JWK for signing decisions.")


class KeyOut(BaseModel):
    kid: str
    subject: str


class DecisionBody(_Body):
    jws: str = Field(max_length=8192, pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
                     description="Compact JWS by your registered key over {request_id, digest, "
                     "decision, approver, iat}, typ attest.access-decision+jws.")
    subject: Identifier | None = Field(None, description="The identifier of the person the request "
                                       "is about, as you know it from the case (the request shows "
                                       "only its purpose): the service checks that it is the "
                                       "request's subject and refuses the decision otherwise. "
                                       "Required to approve; checked when given with a denial.")


def _request_out(request: AccessRequest, status: ApprovalStatus) -> RequestOut:
    return RequestOut(
        request_id=request.request_id, requester=request.requester, department=request.department,
        role=request.role, purpose=request.purpose, typ=request.typ, fields=list(request.fields),
        level=request.level, expires_at=request.expires_at, digest=request.digest,
        state=status.state.value, approvers=list(status.approvers), needed=status.needed,
        denied_by=list(status.denied_by))


def _read_out(result: ReadResult) -> ReadOut:
    return ReadOut(read_id=result.read_id, role=result.role, records=[
        RecordOut(event_id=r.event_id, typ=r.typ, source=r.source, issued_at=r.issued_at,
                  department=r.department,
                  fields=[FieldOut(name=f.name, tier=f.tier, state=f.state, value=f.value,
                                   note=f.note) for f in r.fields])
        for r in result.records])


def _identity(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    """The caller, from their bearer token and nothing else (401 otherwise)."""
    verifier: TokenVerifier = request.app.state.verifier
    return verifier.verify(credentials.credentials if credentials else None)


Who = Annotated[Identity, Depends(_identity)]


# -- the app -----------------------------------------------------------------------------------


def create_app(service: AccessService, verifier: TokenVerifier) -> FastAPI:
    app = FastAPI(
        title="Attest access service",
        version="1",
        description="Reads of protected fields, access requests and signed approvals. Every read "
                    "is audited (committed) before anything is decrypted.",
    )
    app.state.service = service
    app.state.verifier = verifier

    @app.exception_handler(AccessError)
    def _access_error(_: Request, exc: AccessError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if exc.status == 401 else None
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input, which may not even encode (a lone
        # surrogate made it a 500) and may be a secret the caller mistyped.
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(FieldProtectionError)
    def _protection_error(_: Request, exc: FieldProtectionError) -> JSONResponse:
        status = 500 if isinstance(exc, FieldIntegrityError) else 400
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(StorageError)
    def _storage_error(_: Request, exc: StorageError) -> JSONResponse:
        # The driver's words stay in the service's log: they describe the schema, not the caller.
        log.warning("storage error serving a request: %s", exc)
        if isinstance(exc, DatabaseRefused):
            return JSONResponse({"detail": "the database refused this read"}, status_code=403)
        if isinstance(exc, DatabaseUnavailable):
            return JSONResponse({"detail": "the database is unavailable"}, status_code=503)
        return JSONResponse({"detail": "storage error"}, status_code=500)

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/me", tags=["identity"])
    def me(who: Who) -> WhoAmI:
        """Who the presented token says you are."""
        return WhoAmI(subject=who.subject, department=who.department, roles=sorted(who.roles),
                      issuer=who.issuer, expires_at=who.expires_at)

    @app.post("/v1/reads", tags=["reads"])
    def read(body: ReadBody, who: Who) -> ReadOut:
        """Read records: permitted fields decrypted, the rest masked with the reason."""
        query = body.model_dump()
        query["event_id"] = str(body.event_id) if body.event_id else None
        query["request_id"] = str(body.request_id) if body.request_id else None
        return _read_out(service.read(who, ReadQuery(**query)))

    @app.post("/v1/requests", tags=["requests"], status_code=201)
    def create_request(body: RequestBody, who: Who) -> RequestOut:
        """Ask for level-2/3 fields of one subject; approvers sign the returned digest."""
        request, status = service.create_request(who, NewRequest(
            purpose=body.purpose, typ=body.typ, subject=body.subject, fields=tuple(body.fields),
            role=body.role, valid_for=timedelta(hours=body.valid_for_hours)))
        return _request_out(request, status)

    @app.get("/v1/requests", tags=["requests"])
    def list_requests(who: Who) -> list[RequestOut]:
        """Your requests, and (for approvers) every request of the policies you approve for."""
        return [_request_out(r, s) for r, s in service.list_requests(who)]

    @app.get("/v1/requests/{request_id}", tags=["requests"])
    def get_request(request_id: str, who: Who) -> RequestOut:
        request = service.visible_request(who, request_id)
        return _request_out(request, service.status_of(request))

    @app.post("/v1/requests/{request_id}/decisions", tags=["requests"], status_code=201)
    def decide(request_id: str, body: DecisionBody, who: Who) -> RequestOut:
        """Approve or deny: a JWS by your own registered key over the request's digest."""
        service.decide(who, request_id, body.jws, body.subject)
        request = service.visible_request(who, request_id)
        return _request_out(request, service.status_of(request))

    @app.get("/v1/recon/breaks", tags=["reads"])
    def recon_breaks(who: Who, purpose: Purpose, role: Name | None = None,
                     limit: Annotated[int, Field(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """Cross-agency discrepancies your role may see (the rule and the documents' event ids,
        no values); the read is audited before it is answered (access/recon_reads.py)."""
        from access.recon_reads import as_json, read_discrepancies

        read_id, acting, found = read_discrepancies(service, who, purpose, role, limit)
        return {"read_id": read_id, "role": acting, "discrepancies": [as_json(d) for d in found]}

    @app.post("/v1/dead-letters/payload", tags=["dead letters"])
    def dead_letter_payload(body: DeadLetterPayloadBody, who: Who) -> DeadLetterPayloadOut:
        """A dead letter's payload, for holders of a role with permission dead_letters.payload;
        the dlq.payload_shown record is committed first (access/letter_payloads.py)."""
        shown = show_letter_payload(service, who, body.partition, body.offset, body.purpose)
        return DeadLetterPayloadOut(**letter_json(shown))

    @app.put("/v1/me/approval-key", tags=["identity"])
    def register_key(body: KeyBody, who: Who) -> KeyOut:
        """Register your approval-signing public key (once; the service attests it)."""
        key = service.register_key(who, body.jwk)
        return KeyOut(kid=key.kid, subject=key.subject)

    return app


def service_from_settings(settings: Settings) -> tuple[AccessService, TokenVerifier]:
    """The service as ``attest serve`` builds it: policies, keys and issuer read once, at start."""
    policies = [load_policy(name.strip()) for name in settings.access_policies.split(",")
                if name.strip()]
    keyring = open_keyring(settings.state_dir, secret_environ())
    verifier = TokenVerifier(settings.oidc_issuer, settings.oidc_audience,
                             load_jwks(settings.oidc_jwks or jwks_path(settings.state_dir)))
    service = AccessService(
        database_url=settings.access_database_url or settings.database_url, policies=policies,
        keyring=keyring, attestor=load_attestor(settings.state_dir),
        lookups_per_minute=settings.access_lookups_per_minute,
        request_max_age=timedelta(days=settings.access_request_max_days),
        dead_letters=dead_letters_of(settings),
    )
    return service, verifier


def app_from_settings(settings: Settings) -> FastAPI:
    return create_app(*service_from_settings(settings))
