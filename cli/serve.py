"""``attest serve``: run the access service (the only process holding tier private keys)."""

from __future__ import annotations

import typer

from access.app import app_from_settings
from access.errors import AccessError
from cli.output import console, fail
from config.settings import get_settings
from security.errors import SecurityError


def serve(
    host: str | None = typer.Option(None, help="Listen address (default ATTEST_ACCESS_HOST)."),
    port: int | None = typer.Option(None, help="Port (default ATTEST_ACCESS_PORT)."),
) -> None:
    """Serve the access API (OpenAPI at /docs and /openapi.json).

    Loads at start: the policies in ATTEST_ACCESS_POLICIES, the service keyring
    (ATTEST_STATE_DIR/keyring.json or ATTEST_KEK_*), the issuer's JWKS (ATTEST_OIDC_JWKS, else the
    built-in issuer's) and its attestation key. Nothing a caller sends changes any of these.
    """
    import uvicorn

    settings = get_settings()
    try:
        app = app_from_settings(settings)
    except (AccessError, SecurityError) as exc:
        fail(str(exc))
    host = host or settings.access_host
    port = settings.access_port if port is None else port
    console.print(f"access service on http://{host}:{port} (policies: {settings.access_policies})")
    uvicorn.run(app, host=host, port=port, log_level="warning" if settings.log_level == "warn"
                else settings.log_level if settings.log_level != "crit" else "critical")
