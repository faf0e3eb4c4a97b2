"""``attest serve``: run the access service (the only process holding tier private keys)."""

from __future__ import annotations

import typer

from access.serving import prepare_server
from cli.exit_codes import attest_errors
from cli.output import console
from config.settings import get_settings


def serve(
    host: str | None = typer.Option(None, help="Listen address (default ATTEST_ACCESS_HOST)."),
    port: int | None = typer.Option(None, help="Port (default ATTEST_ACCESS_PORT)."),
) -> None:
    """Serve the access API (OpenAPI at /docs and /openapi.json).

    Loads at start: the policies in ATTEST_ACCESS_POLICIES, the tier private keys (the
    service's key file in ATTEST_STATE_DIR, or ATTEST_KEK_*), the issuer's JWKS
    (ATTEST_OIDC_JWKS, else the built-in issuer's) and its attestation key. Nothing a caller
    sends changes any of these.
    """
    settings = get_settings()
    with attest_errors():
        server = prepare_server(settings, host, port)
    console.print(f"access service on {server.url} (policies: {server.policies})")
    server.run()
