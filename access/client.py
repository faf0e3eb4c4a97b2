"""A small HTTP client of the access service, for ``attest query``, ``attest access`` and
``attest dlq show --payload``.

It carries the caller's bearer token and nothing else: the service decides who the caller is.
A refusal becomes ``ServiceRefused`` with the service's own one-sentence reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from access.errors import AccessError


class ServiceRefused(AccessError):
    """The service answered with an error (its ``detail`` is the message)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class ServiceUnreachable(AccessError):
    status = 503


def read_token(path: Path) -> str:
    """An access token from a file (``-``: standard input), as ``attest identity token`` writes it."""
    import sys

    try:
        text = sys.stdin.read() if str(path) == "-" else Path(path).read_text("utf-8")
    except OSError as exc:
        raise AccessError(f"cannot read the token file {path} ({exc.strerror})") from None
    token = text.strip()
    if token.count(".") != 2:
        raise AccessError(f"{path} does not hold a JWT access token")
    return token


class AccessClient:
    def __init__(self, base_url: str, token: str, *, http: httpx.Client | None = None,
                 timeout_s: float = 30.0) -> None:
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout_s)
        self._headers = {"Authorization": f"Bearer {token}"}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AccessClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self._http.request(method, path, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise ServiceUnreachable(f"the access service at {self._http.base_url} is not "
                                     f"reachable ({type(exc).__name__}); is 'attest serve' running?"
                                     ) from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = None
            if not isinstance(detail, str):
                detail = f"the service refused the call (HTTP {response.status_code})"
            raise ServiceRefused(response.status_code, detail)
        return response.json()

    def me(self) -> dict[str, Any]:
        return self._call("GET", "/v1/me")

    def read(self, **body: Any) -> dict[str, Any]:
        return self._call("POST", "/v1/reads", {k: v for k, v in body.items() if v is not None})

    def recon_breaks(self, purpose: str, role: str | None = None, limit: int = 100) -> dict[str, Any]:
        """Cross-agency discrepancies the caller's role may see (``GET /v1/recon/breaks``)."""
        params: dict[str, Any] = {"purpose": purpose, "limit": limit}
        if role is not None:
            params["role"] = role
        return self._call("GET", "/v1/recon/breaks?" + urlencode(params))

    def dead_letter_payload(self, partition: int, offset: int, purpose: str) -> dict[str, Any]:
        """A dead letter's payload, if the service lets the caller see it (``POST
        /v1/dead-letters/payload``); the service records it before it answers."""
        return self._call("POST", "/v1/dead-letters/payload",
                          {"partition": partition, "offset": offset, "purpose": purpose})

    def create_request(self, **body: Any) -> dict[str, Any]:
        return self._call("POST", "/v1/requests", {k: v for k, v in body.items() if v is not None})

    def requests(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/requests")

    def request(self, request_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/requests/{request_id}")

    def register_key(self, public_jwk: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", "/v1/me/approval-key", {"jwk": public_jwk})

    def decide(self, request_id: str, jws: str, subject: str | None = None) -> dict[str, Any]:
        body = {"jws": jws} if subject is None else {"jws": jws, "subject": subject}
        return self._call("POST", f"/v1/requests/{request_id}/decisions", body)
