"""``attest query``: read records through the access service, with a stated purpose.

A client only: the token (from ``attest identity token`` or any OIDC provider) says who you are,
and the service decides, audits (committed before anything is decrypted) and decrypts. There is
no role flag and no policy path: neither would be believed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from access.client import AccessClient, read_token
from access.errors import AccessError
from cli.output import console, fail
from config.settings import get_settings

MASK = "••••••"

TOKEN_FILE = typer.Option(..., "--token-file", "-t", help="Your access token (a file, or - for "
                          "standard input), e.g. from `attest identity token NAME --out FILE`.")


def client(token_file: Path) -> AccessClient:
    """A client of the service at ATTEST_ACCESS_URL carrying the token in ``token_file``."""
    return AccessClient(get_settings().access_url, read_token(token_file))


def show_records(result: dict[str, Any], as_json: bool) -> None:
    """Print a read's records: public and clear fields, masked ones with the reason."""
    if as_json:
        for record in result["records"]:
            fields = record["fields"]
            print(json.dumps({
                "event_id": record["event_id"], "typ": record["typ"], "source": record["source"],
                "issued_at": record["issued_at"],
                "fields": {f["name"]: f["value"] for f in fields if f["state"] in ("public", "clear")},
                "masked": {f["name"]: f["note"] for f in fields if f["state"] == "masked"},
                "forgotten": [f["name"] for f in fields if f["state"] == "forgotten"],
            }, ensure_ascii=False))
        return
    for record in result["records"]:
        console.print(f"[bold]{record['typ']}[/] {record['event_id']}  {record['source']}  "
                      f"{record['issued_at']}", markup=True)
        for f in record["fields"]:
            if f["state"] == "absent":
                continue
            if f["state"] in ("public", "clear"):
                shown = str(f["value"])
            elif f["state"] == "masked":
                shown = f"{MASK} masked ({f['note']})"
            else:
                shown = f"forgotten: {f['note']}"
            console.print(f"  {f['name']:<18} {f['tier']:<12} {shown}", markup=False)
    console.print(f"{len(result['records'])} records as {result['role']}; "
                  f"audit {result['read_id']}", markup=False)


def query(
    token_file: Path = TOKEN_FILE,
    purpose: str | None = typer.Option(None, "--purpose", help="Why you read: recorded with the "
                                       "read. Required; a read without a purpose is refused."),
    subject: str | None = typer.Option(None, "--subject", help="A subject identifier (national id, "
                                       "account or IBAN), matched by blind index in the service."),
    event_id: str | None = typer.Option(None, "--event-id", help="One event."),
    typ: str | None = typer.Option(None, "--typ", help="Only this schema, e.g. attest.document.v1."),
    source: str | None = typer.Option(None, "--source", help="Only events of this source."),
    request: str | None = typer.Option(None, "--request", help="Your approved access request "
                                       "(`attest access request`), for level-2/3 fields."),
    role: str | None = typer.Option(None, "--role", help="Which of your token's roles to read as, "
                                    "when it carries several (it can only narrow, never widen)."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=1000, help="Most records."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per record."),
) -> None:
    """Read records: fields your token's role may read are decrypted, the rest are masked.

    Example: `attest query -t alice.token --purpose "audit 2025 returns" --request REQ`.
    Every read is an audit record (who, role, purpose, fields, records), committed by the
    service before anything is decrypted.
    """
    try:
        with client(token_file) as service:
            result = service.read(purpose=purpose or "", subject=subject, event_id=event_id,
                                  typ=typ, source=source, request_id=request, role=role,
                                  limit=limit)
    except AccessError as exc:
        fail(str(exc))
    show_records(result, as_json)
