"""``attest serve``: the access service, built from settings and ready to run under uvicorn.

Building it loads everything the service holds for its lifetime (policies, the tier private
keys, the issuer's JWKS, the attestation key), so a misconfiguration is one ``AttestError``
before a port is opened; ``Server.run`` then blocks until the process is stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from access.app import app_from_settings
from config.settings import Settings

#: Settings' log levels to uvicorn's names (uvicorn has no "warn" or "crit").
_UVICORN_LEVELS = {"warn": "warning", "crit": "critical"}


@dataclass(frozen=True, slots=True)
class Server:
    """The access service's app and where it listens."""

    app: FastAPI
    host: str
    port: int
    log_level: str
    policies: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def run(self) -> None:
        """Serve until stopped (Ctrl-C or a signal)."""
        import uvicorn

        uvicorn.run(self.app, host=self.host, port=self.port, log_level=self.log_level)


def prepare_server(settings: Settings, host: str | None = None, port: int | None = None) -> Server:
    """The access service from ``settings``; ``host``/``port`` override ATTEST_ACCESS_HOST/PORT.

    Raises the access or security layer's error (an ``AttestError``) when the policies, keys
    or issuer are not usable.
    """
    app = app_from_settings(settings)
    return Server(app, host or settings.access_host,
                  settings.access_port if port is None else port,
                  _UVICORN_LEVELS.get(settings.log_level, settings.log_level),
                  str(settings.access_policies))
