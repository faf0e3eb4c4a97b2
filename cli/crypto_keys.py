"""``attest keys init`` and ``attest keys rotate-kek``: the field-encryption key files.

The service's key file holds one X25519 key-encryption key per tier (internal, confidential,
restricted) and one blind-index key per identifier domain; it is created 0600 in the state
folder. The work is ``operations.key_files`` and ``operations.kek_rotation``'s; these
commands parse, call, and print. Nothing here ever prints key material.
"""

from __future__ import annotations

import typer

from cli.exit_codes import attest_errors
from cli.keys import operator
from cli.output import console, err_console
from config.settings import get_settings
from operations.kek_rotation import rotate_kek as rotate_tier_kek
from operations.key_files import init_key_files


def init() -> None:
    """Create the field-encryption key files (0600): a key-encryption key per tier and a
    blind-index key per identifier domain. Safe to run again: it only adds what is missing.

    One file per process, each 0600: in ATTEST_STATE_DIR, the access service's (`attest
    serve`, the only process holding tier private keys), the workers' (public tier keys and
    blind-index keys), issuer/signing-key.jwk for the built-in token issuer, and
    access/service-key.jwk for the service's attestations.
    """
    settings = get_settings()
    with attest_errors():
        files = init_key_files(settings, operator())
    for line in files.lines():
        console.print(line)
    warning = files.warning()
    if warning:
        err_console.print(f"[yellow]warning:[/] {warning}")


def rotate_kek(
    tier: str = typer.Option(..., "--tier", "-t",
                             help="internal, confidential or restricted."),
) -> None:
    """Add a new key-encryption key version for TIER and re-wrap that tier's keys under it.

    Only the tier's wrapping keys are resealed (one transaction); data keys and field
    ciphertexts are not touched. Older key versions are kept so that a worker still running
    with the old public key stays readable; restart workers after a rotation and run it
    again later to move what they sealed meanwhile. Audited; if the audit record cannot be
    sent, nothing is re-wrapped.
    """
    settings = get_settings()
    with attest_errors():
        done = rotate_tier_kek(settings, tier, operator())
    console.print(f"{done.tier.label}: key-encryption key v{done.before} -> v{done.after}; "
                  f"re-wrapped {done.rewrapped} wrapping keys (field data untouched)")
