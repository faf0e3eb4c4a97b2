"""Security review finding: ``load_jwks`` fetched the issuer's keys over plain http, so anyone
on the path could swap them and mint any identity. Only a file or an https URL is accepted."""

from __future__ import annotations

import httpx
import pytest

from access.errors import IdentityConfigError
from access.identity import load_jwks


@pytest.mark.parametrize("source", ["http://issuer.example/jwks.json",
                                    "HTTP://issuer.example/jwks.json", "ftp://issuer.example/jwks"])
def test_the_jwks_is_never_fetched_over_anything_but_https(
    source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched: list[str] = []
    monkeypatch.setattr(httpx, "get", lambda url, **_: fetched.append(url))
    with pytest.raises(IdentityConfigError, match="https"):
        load_jwks(source)
    assert fetched == []
