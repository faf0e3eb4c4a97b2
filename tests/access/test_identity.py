"""Access tokens: what the verifier accepts, what it refuses, and 401s through the real service."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, OKPKey

from access.errors import AuthenticationFailed, IdentityConfigError
from access.identity import TokenVerifier, load_jwks
from access.issuer import (
    DEFAULT_ISSUER,
    add_person,
    ensure_issuer,
    jwks_path,
    mint_token,
    read_private_json,
    signing_key_path,
)
from tests.access.conftest import AccessWorld

AUD = "attest-access"


@pytest.fixture()
def issuer(tmp_path: Path) -> Path:
    ensure_issuer(tmp_path)
    add_person(tmp_path, "alice", "tax-bureau", ["tax-inspector"])
    return tmp_path


def _verifier(state: Path, audience: str = AUD, issuer: str = DEFAULT_ISSUER) -> TokenVerifier:
    return TokenVerifier(issuer, audience, load_jwks(jwks_path(state)))


def _forge(state: Path, claims: dict, header: dict | None = None, key=None) -> str:
    key = key or OKPKey.import_key(read_private_json(signing_key_path(state)))
    now = int(time.time())
    body = {"iss": DEFAULT_ISSUER, "aud": AUD, "sub": "alice", "iat": now, "exp": now + 300,
            "department": "tax-bureau", "roles": ["tax-inspector"], **claims}
    return jwt.encode({"alg": "Ed25519", "typ": "at+jwt", **(header or {})}, body, key,
                      algorithms=["Ed25519", "HS256"])


def test_a_minted_token_carries_department_and_roles(issuer: Path) -> None:
    who = _verifier(issuer).verify(mint_token(issuer, "alice", audience=AUD))
    assert (who.subject, who.department, who.roles) == ("alice", "tax-bureau",
                                                        frozenset({"tax-inspector"}))
    assert who.actor == "person:alice"


def test_the_issuer_key_is_private_and_the_jwks_public(issuer: Path) -> None:
    assert signing_key_path(issuer).stat().st_mode & 0o777 == 0o600
    assert signing_key_path(issuer).parent.stat().st_mode & 0o777 == 0o700
    assert '"d"' in signing_key_path(issuer).read_text()
    assert '"d"' not in jwks_path(issuer).read_text()


@pytest.mark.parametrize("claims, why", [
    ({"exp": int(time.time()) - 3600}, "expired"),
    ({"nbf": int(time.time()) + 3600}, "not yet valid"),
    ({"aud": "someone-else"}, "audience"),
    ({"iss": "https://evil.example"}, "issuer"),
    ({"department": ""}, "department"),
    ({"roles": [1, 2]}, "roles"),
    ({"sub": ""}, "sub"),
])
def test_bad_claims_are_refused(issuer: Path, claims: dict, why: str) -> None:
    assert _verifier(issuer).verify(_forge(issuer, {})).subject == "alice"  # the baseline passes
    with pytest.raises(AuthenticationFailed):
        _verifier(issuer).verify(_forge(issuer, claims))


def test_a_token_without_department_is_refused(issuer: Path) -> None:
    key = OKPKey.import_key(read_private_json(signing_key_path(issuer)))
    now = int(time.time())
    token = jwt.encode({"alg": "Ed25519", "typ": "at+jwt"},
                       {"iss": DEFAULT_ISSUER, "aud": AUD, "sub": "alice", "exp": now + 60,
                        "roles": ["tax-inspector"]}, key, algorithms=["Ed25519"])
    with pytest.raises(AuthenticationFailed, match="department"):
        _verifier(issuer).verify(token)


def test_other_keys_hmac_and_plain_jwts_are_refused(issuer: Path) -> None:
    stranger = OKPKey.generate_key("Ed25519")
    with pytest.raises(AuthenticationFailed):
        _verifier(issuer).verify(_forge(issuer, {}, key=stranger))
    secret = OctKey.generate_key(256)
    with pytest.raises(AuthenticationFailed):
        _verifier(issuer).verify(_forge(issuer, {}, header={"alg": "HS256"}, key=secret))
    with pytest.raises(AuthenticationFailed, match="at\\+jwt"):
        _verifier(issuer).verify(_forge(issuer, {}, header={"typ": "JWT"}))
    with pytest.raises(AuthenticationFailed):
        _verifier(issuer).verify("not.a.token")


def test_a_jwks_with_a_private_key_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "jwks.json"
    bad.write_text(json.dumps({"keys": [OKPKey.generate_key("Ed25519").as_dict(private=True)]}))
    with pytest.raises(IdentityConfigError, match="private"):
        load_jwks(bad)


def test_unknown_people_get_no_token(issuer: Path) -> None:
    with pytest.raises(IdentityConfigError):
        mint_token(issuer, "mallory", audience=AUD)


def test_no_token_or_an_expired_one_gets_401(world: AccessWorld) -> None:
    body = {"purpose": "p"}
    assert world.client.post("/v1/reads", json=body).status_code == 401
    expired = world.token("tess", ttl_s=60, now=time.time() - 3600)
    response = world.client.post("/v1/reads", json=body,
                                 headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    garbage = world.client.get("/v1/me", headers={"Authorization": "Bearer x.y.z"})
    assert garbage.status_code == 401
    assert world.client.get("/v1/me", headers=world.auth("tess")).json()["department"] == "tax-bureau"
