"""Errors of the access layer, one per way a request can fail (each maps to one HTTP status)."""

from __future__ import annotations

from config.errors import AttestError


class AccessError(AttestError):
    """Base of every access-layer failure; ``status`` is the HTTP status the API answers."""

    status = 400


class AuthenticationFailed(AccessError):
    """No token, or a token that is not valid for this service (bad signature, expired, ...)."""

    status = 401


class Forbidden(AccessError):
    """An authenticated person asked for something the policy does not give them."""

    status = 403


class NotFound(AccessError):
    status = 404


class Conflict(AccessError):
    """The request's state does not allow this (already decided, expired)."""

    status = 409


class RateLimited(AccessError):
    status = 429


class AuditUnavailable(AccessError):
    """The audit record could not be committed, so the read was refused (fail closed)."""

    status = 503


class LettersUnavailable(AccessError):
    """The dead-letter topic could not be read (the broker is down, or none is configured)."""

    status = 502


class IdentityConfigError(AccessError):
    """The issuer, its keys or its people are misconfigured (an operator's mistake)."""

    status = 500
