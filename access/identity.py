"""Who is asking: RFC 9068 JWT access tokens verified against an issuer's JWKS.

Any OIDC provider (Keycloak, Entra ID, ...) plugs in by its issuer URL, audience and JWKS
(a file or an https URL); the embedded stack uses the small built-in issuer in
``access.issuer``. A person's department and roles come from the token's ``department`` and
``roles`` claims and from nowhere else: no flag, no environment variable, no login name.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from access.errors import AuthenticationFailed, IdentityConfigError

#: Signature algorithms accepted on access tokens (no HMAC, no ``none``).
TOKEN_ALGORITHMS = ("Ed25519", "EdDSA", "ES256", "RS256", "PS256")
#: RFC 9068 section 2.1: the ``typ`` header of a JWT access token.
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
LEEWAY_S = 30


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated person, as their verified token says."""

    subject: str
    department: str
    roles: frozenset[str]
    issuer: str
    token_id: str
    expires_at: int

    @property
    def actor(self) -> str:
        """How the audit log names this person: ``person:<sub>`` (the issuer is in the detail)."""
        return f"person:{self.subject}"


def load_jwks(source: str | Path, timeout_s: float = 5.0) -> KeySet:
    """The issuer's public keys from a JWKS file or an https URL (read once, at start)."""
    text = str(source)
    if "://" in text and not text.lower().startswith("https://"):
        # Plain http (or any other scheme) lets anyone on the path swap the issuer's keys and
        # mint any identity: the JWKS is a file or an https URL, nothing else.
        raise IdentityConfigError(f"the issuer's JWKS must be a file or an https:// URL, not "
                                  f"{text.split('://', 1)[0]}://")
    try:
        if text.lower().startswith("https://"):
            response = httpx.get(text, timeout=timeout_s)
            response.raise_for_status()
            document = response.json()
        else:
            document = json.loads(Path(text).read_text("utf-8"))
        keys = KeySet.import_key_set(document)
    except (OSError, ValueError, httpx.HTTPError, JoseError) as exc:
        raise IdentityConfigError(f"cannot load the issuer's JWKS from {text} "
                                  f"({type(exc).__name__})") from None
    if any(key.is_private for key in keys.keys):
        raise IdentityConfigError(f"{text} holds a private key; a JWKS must be public keys only")
    return keys


class TokenVerifier:
    """Checks an access token's signature and claims; returns the ``Identity`` it carries."""

    def __init__(
        self, issuer: str, audience: str, keys: KeySet, *,
        clock: Callable[[], float] = time.time, leeway_s: int = LEEWAY_S,
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._keys = keys
        self._clock = clock
        self._leeway = leeway_s

    def verify(self, token: str | None) -> Identity:
        """Raise ``AuthenticationFailed`` (one sentence, no secret) unless the token is valid."""
        if not token:
            raise AuthenticationFailed("no access token was presented")
        try:
            decoded = jwt.decode(token, self._keys, algorithms=list(TOKEN_ALGORITHMS))
        except (JoseError, ValueError, TypeError) as exc:
            raise AuthenticationFailed(f"the access token is not valid ({_why(exc)})") from None
        if str(decoded.header.get("typ", "")).lower() not in ACCESS_TOKEN_TYPES:
            raise AuthenticationFailed("the token is not a JWT access token (typ must be at+jwt)")
        claims = decoded.claims
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._clock()), leeway=self._leeway,
            iss={"essential": True, "value": self._issuer},
            aud={"essential": True, "value": self._audience},
            sub={"essential": True}, exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except (JoseError, ValueError, TypeError) as exc:
            raise AuthenticationFailed(f"the access token is not valid ({_why(exc)})") from None
        return _identity(claims)


def _identity(claims: dict[str, Any]) -> Identity:
    department = claims.get("department")
    roles = claims.get("roles", [])
    if isinstance(roles, str):
        roles = [roles]
    if not isinstance(department, str) or not department:
        raise AuthenticationFailed("the access token names no department")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise AuthenticationFailed("the access token's roles claim is not a list of names")
    return Identity(
        subject=str(claims["sub"]), department=department, roles=frozenset(roles),
        issuer=str(claims["iss"]), token_id=str(claims.get("jti", "")),
        expires_at=int(claims["exp"]),
    )


def _why(exc: Exception) -> str:
    """A short, secret-free reason (joserfc's error codes: expired_token, bad_signature, ...)."""
    code = getattr(exc, "error", None)
    return str(code) if code else type(exc).__name__
