"""``attest access``: data-sharing requests and signed approvals, as a client of the service.

``request`` asks for level-2/3 fields of one subject; ``approve`` / ``deny`` sign the request's
digest with *your own* key (registered with the service on first use) and pass the subject you
name (``--subject``, required to approve) to the service, which checks it; ``read`` reads with an
approved request; ``list`` shows your requests (approvers: every request they may decide).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from joserfc.jwk import OKPKey

from access.approvals import sign_decision
from access.errors import AccessError
from access.issuer import load_person_key, read_private_json
from cli.output import console, fail
from cli.query import TOKEN_FILE, client, show_records
from config.settings import get_settings

app = typer.Typer(help="Access requests, signed approvals and approved reads (via the access "
                  "service).", no_args_is_help=True)


def _show_request(request: dict[str, Any]) -> None:
    console.print(
        f"request {request['request_id']} by {request['requester']} ({request['role']}, "
        f"{request['department']}): {request['typ']} {', '.join(request['fields'])}; "
        f"level {request['level']}, {len(request['approvers'])}/{request['needed']} approvals, "
        f"{request['state']}; expires {request['expires_at']}\n"
        f"  purpose: {request['purpose']}\n  digest:  {request['digest']}", markup=False)


@app.command("request")
def request_command(
    token_file: Path = TOKEN_FILE,
    purpose: str = typer.Option(..., "--purpose", help="Why (approvers see it; audited)."),
    subject: str = typer.Option(..., "--subject", help="The subject's identifier (kept by the "
                                "service as a blind index only)."),
    field: list[str] = typer.Option(..., "--field", "-f", help="A field (repeatable), e.g. income."),
    typ: str = typer.Option("attest.document.v1", "--typ", help="The schema."),
    role: str | None = typer.Option(None, "--role", help="Which of your token's roles asks."),
    hours: float = typer.Option(168.0, "--hours", min=0.01, help="How long the request stays valid."),
) -> None:
    """Ask for fields that need approval (level 2: one approver, level 3: two)."""
    try:
        with client(token_file) as service:
            made = service.create_request(purpose=purpose, subject=subject, fields=field, typ=typ,
                                          role=role, valid_for_hours=hours)
    except AccessError as exc:
        fail(str(exc))
    _show_request(made)


def _decide(token_file: Path, request_id: str, decision: str, key_file: Path | None,
            yes: bool, subject: str | None) -> None:
    """Show what is to be signed, confirm, then sign the digest with the person's own key."""
    try:
        with client(token_file) as service:
            me = service.me()["subject"]
            request = service.request(request_id)
            _show_request(request)
            if not yes and not typer.confirm(f"{decision} this request as {me}?"):
                fail("nothing was signed")
            key = (load_person_key(get_settings().state_dir, me) if key_file is None
                   else OKPKey.import_key(read_private_json(key_file)))
            service.register_key(key.as_dict(private=False))  # once; idempotent after
            jws = sign_decision(request["request_id"], request["digest"], decision, me, key)
            decided = service.decide(request_id, jws, subject)
    except AccessError as exc:
        fail(str(exc))
    _show_request(decided)


KEY_FILE = typer.Option(None, "--key", help="Your approval-signing key (default: "
                        "ATTEST_STATE_DIR/people/<you>.jwk, made by `attest identity add-person`).")
YES = typer.Option(False, "--yes", "-y", help="Sign without asking (the request is still shown).")
SUBJECT_HELP = ("The identifier of the person the request is about (national id, account), as "
                "you know it from the case; the service refuses the decision unless it is the "
                "request's subject.")


@app.command()
def approve(
    request_id: str = typer.Argument(..., help="The request to approve."),
    token_file: Path = TOKEN_FILE,
    subject: str = typer.Option(..., "--subject", help=SUBJECT_HELP),
    key: Path | None = KEY_FILE,
    yes: bool = YES,
) -> None:
    """Approve a colleague's request: shown first, then its digest is signed with your own key."""
    _decide(token_file, request_id, "approve", key, yes, subject)


@app.command()
def deny(
    request_id: str = typer.Argument(..., help="The request to deny."),
    token_file: Path = TOKEN_FILE,
    subject: str | None = typer.Option(None, "--subject", help=SUBJECT_HELP + " Optional "
                                       "for a denial (checked when given)."),
    key: Path | None = KEY_FILE,
    yes: bool = YES,
) -> None:
    """Deny a request (a signed denial vetoes it, whatever else was approved)."""
    _decide(token_file, request_id, "deny", key, yes, subject)


@app.command()
def read(
    request_id: str = typer.Argument(..., help="Your approved request."),
    token_file: Path = TOKEN_FILE,
    purpose: str = typer.Option(..., "--purpose", help="Why you read now (audited)."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=1000),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per record."),
) -> None:
    """Read the subject and fields of an approved request."""
    try:
        with client(token_file) as service:
            result = service.read(purpose=purpose, request_id=request_id, limit=limit)
    except AccessError as exc:
        fail(str(exc))
    show_records(result, as_json)


@app.command("list")
def list_requests(token_file: Path = TOKEN_FILE) -> None:
    """Your requests; for approvers, every request they may decide on."""
    try:
        with client(token_file) as service:
            requests = service.requests()
    except AccessError as exc:
        fail(str(exc))
    if not requests:
        console.print("no requests")
    for r in requests:  # one line each: ids must stay whole to be copied into `approve`
        console.print(f"{r['request_id']}  {r['state']:<8} {len(r['approvers'])}/{r['needed']}  "
                      f"{r['requester']} ({r['role']}) {', '.join(r['fields'])}  "
                      f"expires {r['expires_at']}", markup=False, soft_wrap=True)

