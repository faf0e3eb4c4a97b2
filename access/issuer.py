"""The built-in issuer for the embedded stack: people, and short-lived RFC 9068 access tokens.

It stands in for an OIDC provider on one laptop. Its signing key lives 0600 in
``<state>/issuer/`` (a 0700 folder) and only this module reads it; the access service reads
the public ``jwks.json`` beside it, exactly as it would read Keycloak's. People (subject,
department, roles) are kept in ``people.json`` there; each person also gets an Ed25519 key of
their own in ``<state>/people/<subject>.jwk`` to sign approvals with.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import OKPKey

from access.errors import IdentityConfigError

ISSUER_DIR = "issuer"
PEOPLE_KEYS_DIR = "people"
DEFAULT_ISSUER = "urn:attest:local-issuer"
ACCESS_JWT_TYP = "at+jwt"
CLIENT_ID = "attest-cli"
MAX_TTL_S = 12 * 3600
_SUBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Person:
    subject: str
    department: str
    roles: tuple[str, ...]


def issuer_dir(state_dir: Path) -> Path:
    return Path(state_dir) / ISSUER_DIR


def jwks_path(state_dir: Path) -> Path:
    """The built-in issuer's public keys: what ``ATTEST_OIDC_JWKS`` defaults to."""
    return issuer_dir(state_dir) / "jwks.json"


def signing_key_path(state_dir: Path) -> Path:
    return issuer_dir(state_dir) / "signing-key.jwk"


def person_key_path(state_dir: Path, subject: str) -> Path:
    """Where a person's own approval-signing key lives (0600)."""
    return Path(state_dir) / PEOPLE_KEYS_DIR / f"{check_subject(subject)}.jwk"


def check_subject(subject: str) -> str:
    if not _SUBJECT.match(subject):
        raise IdentityConfigError(f"{subject!r} is not a usable subject (letters, digits, . _ @ -)")
    return subject


def write_private_json(path: Path, document: Any, *, replace: bool = False) -> None:
    """Write JSON 0600 in a 0700 folder; never overwrite unless ``replace`` (then atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    target = path.with_name(f".{path.name}.{os.getpid()}.tmp") if replace else path
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise IdentityConfigError(f"{target} already exists; it is never overwritten") from None
    with os.fdopen(fd, "w") as out:
        json.dump(document, out, indent=1)
        out.flush()
        os.fsync(out.fileno())
    if replace:
        os.replace(target, path)


def read_private_json(path: Path) -> Any:
    """Read a 0600 JSON file; refused when group or others may read it (as ssh refuses a key)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise IdentityConfigError(f"no file at {path}; run 'attest keys init'") from None
    if mode & 0o077:
        raise IdentityConfigError(f"{path} is accessible by group or others; run 'chmod 600' on it")
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        raise IdentityConfigError(f"{path} cannot be read as JSON") from None


def ensure_issuer(state_dir: Path) -> bool:
    """Create the issuer's signing key and public JWKS if absent; return whether it created them."""
    key_path = signing_key_path(state_dir)
    created = False
    if not key_path.exists():
        key = OKPKey.generate_key("Ed25519", auto_kid=True)
        write_private_json(key_path, key.as_dict(private=True))
        created = True
    key = OKPKey.import_key(read_private_json(key_path))
    public = {"keys": [{**key.as_dict(private=False), "use": "sig", "alg": "Ed25519"}]}
    jwks = jwks_path(state_dir)
    if not jwks.exists() or json.loads(jwks.read_text("utf-8")) != public:
        tmp = jwks.with_name(f".jwks.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(public, indent=1), "utf-8")
        os.replace(tmp, jwks)
    return created


def _people_path(state_dir: Path) -> Path:
    return issuer_dir(state_dir) / "people.json"


def load_people(state_dir: Path) -> dict[str, Person]:
    path = _people_path(state_dir)
    if not path.exists():
        return {}
    document = read_private_json(path)
    return {s: Person(s, str(p["department"]), tuple(p["roles"])) for s, p in document.items()}


def add_person(state_dir: Path, subject: str, department: str, roles: list[str]) -> Person:
    """Register a person with the issuer and give them an approval-signing key of their own."""
    check_subject(subject)
    for name in (department, *roles):
        if not _NAME.match(name):
            raise IdentityConfigError(f"{name!r} is not a department or role name (a-z, 0-9, -)")
    people = load_people(state_dir)
    if subject in people:
        raise IdentityConfigError(f"{subject} is already registered with the issuer")
    person = Person(subject, department, tuple(sorted(set(roles))))
    people[subject] = person
    document = {p.subject: {"department": p.department, "roles": list(p.roles)}
                for p in people.values()}
    path = _people_path(state_dir)
    write_private_json(path, document, replace=path.exists())
    key_path = person_key_path(state_dir, subject)
    if not key_path.exists():
        write_private_json(key_path, OKPKey.generate_key("Ed25519", auto_kid=True).as_dict(private=True))
    return person


def load_person_key(state_dir: Path, subject: str) -> OKPKey:
    """A person's own approval-signing key (private)."""
    return OKPKey.import_key(read_private_json(person_key_path(state_dir, subject)))


def mint_token(
    state_dir: Path, subject: str, *, audience: str, issuer: str = DEFAULT_ISSUER,
    ttl_s: int = 900, now: float | None = None,
) -> str:
    """A signed RFC 9068 access token for a registered person (short-lived: ``ttl_s``)."""
    people = load_people(state_dir)
    person = people.get(subject)
    if person is None:
        raise IdentityConfigError(f"{subject} is not registered with the built-in issuer; "
                                  "run 'attest identity add-person'")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise IdentityConfigError(f"a token lives between 1 s and {MAX_TTL_S} s")
    key = OKPKey.import_key(read_private_json(signing_key_path(state_dir)))
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": issuer, "aud": audience, "sub": person.subject, "client_id": CLIENT_ID,
        "iat": issued, "nbf": issued, "exp": issued + ttl_s, "jti": str(uuid.uuid4()),
        "department": person.department, "roles": list(person.roles),
    }
    header = {"alg": "Ed25519", "kid": key.kid, "typ": ACCESS_JWT_TYP}
    return jwt.encode(header, claims, key, algorithms=["Ed25519"])
