"""``attest forget``: crypto-shred a data subject by destroying its data keys.

The work is ``operations.forgetting.shred_subject``'s; this command parses, asks for
confirmation, and prints.
"""

from __future__ import annotations

import typer

from cli.exit_codes import attest_errors
from cli.keys import operator
from cli.output import console
from config.settings import get_settings
from operations.forgetting import shred_subject


def _confirm(domains: list[str]) -> None:
    typer.confirm(f"Destroy every data key of this subject ({', '.join(domains)})? "
                  "This cannot be undone", abort=True)


def forget(
    subject: str = typer.Option(..., "--subject", help="The subject's identifier: a national id, "
                                "an account number or IBAN, a request id (any spacing)."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the audit trail)."),
    domain: list[str] = typer.Option(
        None, "--domain", help="Only this identifier domain (national_id, account, request); "
                               "default: every subject domain."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Destroy every data key of a subject (crypto-shredding). Irreversible.

    Every protected field of the subject's records becomes unreadable for good (public fields
    stay); reads then say the subject was forgotten. The subject's blind indexes are cleared
    too, so the records no longer join on it. Audited before it commits: if the audit record
    cannot be sent, nothing is destroyed. The identifier itself is never recorded.
    """
    settings = get_settings()
    with attest_errors():
        done = shred_subject(settings, subject, reason, domain, operator(),
                             confirm=(lambda domains: None) if yes else _confirm)
    outcome = done.outcome
    if not outcome.data_keys:
        console.print("no data key of this subject was found (unknown, or already forgotten)")
        return
    console.print(f"forgotten: destroyed {outcome.data_keys} data keys "
                  f"({', '.join(outcome.tiers)}) protecting {len(outcome.event_ids)} indexed records "
                  f"(audit {done.forget_id})")
