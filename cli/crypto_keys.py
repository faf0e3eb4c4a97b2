"""``attest keys init``, ``rotate-kek`` and ``retire-kek``: the field-encryption key files.

The service's key file holds one X25519 key-encryption key per tier (internal, confidential,
restricted) and one blind-index key per identifier domain; it is created 0600 in the state
folder. The work is ``operations.key_files`` and ``operations.kek_rotation``'s; these
commands parse, call, and print. Nothing here ever prints key material.
"""

from __future__ import annotations

import typer

from cli.exit_codes import attest_errors, operator_errors
from cli.keys import operator
from cli.output import console, err_console
from config.settings import get_settings
from operations.errors import ExitCode
from operations.kek_rotation import DEFAULT_BATCH
from operations.kek_rotation import retire_kek as retire_tier_kek
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
    resume: bool = typer.Option(
        False, "--resume",
        help="Continue an interrupted rotation to the current version; mint no new one."),
    batch_size: int = typer.Option(
        DEFAULT_BATCH, "--batch-size", min=1,
        help="Data keys re-wrapped per transaction (each batch gets a new wrapping key)."),
) -> None:
    """Replace TIER's key-encryption key: a new version, new wrapping keys sealed to it, every
    data key of the tier re-wrapped under them, the old wrapping keys deleted.

    After it, the old version's private key opens nothing stored; field ciphertexts do not
    change (data keys do not). Batches of one transaction each; if interrupted, run again with
    --resume. Running workers seal to the new version from their next batch, without a
    restart. Audited before anything changes (exit 10 if the record cannot be sent). Retire
    the old version afterwards with `attest keys retire-kek`.
    """
    settings = get_settings()

    def progress(moved: int, total: int) -> None:
        err_console.print(f"  {tier}: re-wrapped {moved}/{total} data keys")

    try:
        with operator_errors():
            done = rotate_tier_kek(settings, tier, operator(), resume=resume,
                                   batch_size=batch_size, progress=progress)
    except KeyboardInterrupt:
        err_console.print(f"interrupted: the batches committed so far stay done; continue with "
                          f"attest keys rotate-kek --tier {tier} --resume")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    start = "continued at" if done.resumed else f"v{done.before} ->"
    console.print(f"{done.tier.label}: key-encryption key {start} v{done.after}; re-wrapped "
                  f"{done.moved} data keys under new wrapping keys, deleted {done.deleted} old "
                  "wrapping keys (field data untouched)")
    console.print(f"retire the older versions when nothing needs them: attest keys retire-kek "
                  f"--tier {done.tier.label} --version N")


def retire_kek(
    tier: str = typer.Option(..., "--tier", "-t", help="internal, confidential or restricted."),
    version: int = typer.Option(..., "--version", "-V", min=1,
                                help="The old key version to remove from the key files."),
) -> None:
    """Remove an old key version of TIER from the key files, once nothing is sealed to it.

    Refused (exit 13) while any wrapping key is still sealed to that version: finish the
    rotation first (`attest keys rotate-kek --tier TIER --resume`). The current version is
    never retired. Audited before the file changes (exit 10 if the record cannot be sent).
    """
    settings = get_settings()
    with operator_errors():
        done = retire_tier_kek(settings, tier, version, operator())
    console.print(f"{done.tier.label}: v{done.version} retired; the key files keep "
                  + ", ".join(f"v{v}" for v in done.remaining))
