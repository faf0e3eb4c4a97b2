"""``attest dlq``: read the dead-letter topic."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from cli.exit_codes import operator_errors
from cli.output import console, fail
from cli.replay import finish, run_replay
from config.settings import get_settings
from operations.errors import ExitCode
from operations.letter_payload import fetch_payload, letter_digest
from operations.letters import LetterFilter, summarize
from operations.selection import Selection
from operations.times import parse_time
from security.errors import Rejection
from security.jws import parse_json_object
from security.signatures import b64url_decode
from streams.dead_letters import StoredLetter, read_letters
from streams.topics import DEAD_LETTER

app = typer.Typer(help="Inspect and retry rejected messages in the dead-letter topic.", no_args_is_help=True)


@app.command("list")
def list_letters(
    reason: list[str] = typer.Option([], help="Only this reason code, e.g. bad_signature (repeatable)."),
    since: str | None = typer.Option(None, help="Rejected at or after: RFC 3339, or a duration ago (2h)."),
    source: str | None = typer.Option(
        None, help="Only letters from this source topic (transactions) or claimed source (core-ledger)."),
    limit: int = typer.Option(50, min=1, help="Show at most this many (the newest)."),
) -> None:
    """List dead letters: position, reason, where they came from, and the detail.

    Each rejected message is listed once, even when a worker restart dead-lettered it again
    (same source position, same bytes). Ends with a count per reason of what matched.
    """
    with operator_errors():
        letter_filter = LetterFilter(reasons=tuple(reason), since=parse_time(since) if since else None,
                                     source=source)
        summary = summarize(read_letters(get_settings()), letter_filter)
    shown = summary.unique[-limit:]
    table = Table("dlq position", "reason", "from", "rejected at", "bytes", "detail")
    for letter in shown:
        at = letter.rejected_at
        # Text cells: a detail may quote attacker-chosen strings (a kid like "[/x]") that
        # Rich would otherwise parse as markup.
        table.add_row(*(Text(cell) for cell in (
            letter.position, letter.reason, letter.origin,
            at.strftime("%Y-%m-%d %H:%M:%S") if at else "?", str(len(letter.value)),
            letter.headers.get("attest-detail", "")[:80])))
    console.print(table)
    counts = "  ".join(f"{r}: {n}" for r, n in sorted(summary.by_reason.items()))
    console.print(counts or "no dead letters", markup=False)
    if summary.duplicates:
        console.print(f"({summary.duplicates} repeated rejections of the same messages not counted)",
                      markup=False)


@app.command()
def retry(
    reason: list[str] = typer.Option(..., help="Retry letters with this reason, e.g. unknown_key "
                                     "(repeatable)."),
    since: str | None = typer.Option(None, help="Only letters rejected at or after this time."),
    source: str | None = typer.Option(None, help="Only letters from this source topic or claimed source."),
    why: str | None = typer.Option(None, help="Why you retry (audited); default names the reasons."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would happen; write nothing."),
    rate: float | None = typer.Option(None, min=0.1, help="At most this many messages per second."),
) -> None:
    """Send dead letters through intake again, say after registering a missing key.

    What now passes is stored once; what still fails stays where it is and is not written to
    the dead-letter topic again. Each rejected message is retried once, however often it was
    dead-lettered. Running it again changes nothing. Ctrl-C stops; the same command resumes.
    """
    settings = get_settings()
    with operator_errors():
        selection = Selection(topic=DEAD_LETTER.suffix, reasons=tuple(reason),
                              since=parse_time(since) if since else None, source=source,
                              dry_run=dry_run, extra={"since": since} if since else {})
        result = run_replay(settings, selection, why or f"retry of {', '.join(reason)} dead letters",
                            rate)
    finish(result)


def _describe_token(value: bytes) -> list[str]:
    """Best-effort view of what the message claims, for a human; nothing here is trusted.

    The payload is never decoded here: it comes only from the access service (``--payload``).
    """
    parts = value.split(b".")
    if len(parts) != 3:
        return [f"not a compact JWS ({len(parts)} parts)"]
    try:
        header = json.dumps(parse_json_object(b64url_decode(parts[0]), "header"), ensure_ascii=False)
        lines = [f"header: {header[:2000]}"]
    except (ValueError, Rejection) as exc:
        lines = [f"header: unreadable ({exc})"]
    lines.append(f"payload: hidden ({len(parts[1])} bytes of base64url; it may hold protected "
                 "fields in clear: --payload --why TEXT -t TOKEN_FILE asks the access service, "
                 "which checks your role and records it)")
    return lines


def _print_letter(reason: str, origin: str, headers: dict[str, str], key: bytes | None, size: int,
                  digest: str, lines: list[str], *, key_shown: bool = True) -> None:
    console.print(f"{reason} from {origin}", markup=False)
    for name, value in sorted(headers.items()):
        console.print(f"  {name}: {value}", markup=False)
    if key_shown or key is None:
        console.print(f"  key: {key!r}", markup=False)
    else:
        # The Kafka key is the producer's choice and often a payment reference or a subject
        # id: it is shown with the payload (through the access service), never without it.
        console.print(f"  key: {len(key)} bytes, hidden (shown with --payload)", markup=False)
    console.print(f"  bytes: {size}, sha256 {digest}", markup=False)
    for line in lines:
        console.print(f"  {line}", markup=False)


def _shown_lines(shown: dict[str, Any]) -> list[str]:
    """The service's answer (access/app.py ``DeadLetterPayloadOut``) as lines for a person."""
    value = base64.b64decode(shown["value"])
    lines = []
    if shown["header"] is not None:
        lines.append(f"header: {json.dumps(shown['header'], ensure_ascii=False)[:2000]}")
    if shown["payload"] is not None:
        lines.append(f"payload: {json.dumps(shown['payload'], ensure_ascii=False)[:2000]}")
    elif shown["form"] == "jwe":
        lines.append("payload: encrypted (a JWE), shown as stored below")
    else:
        lines.append(f"payload: not readable as a JWS's JSON payload ({shown['form']})")
    lines.append(f"raw ({len(value)} bytes): {value[:512]!r}{'...' if len(value) > 512 else ''}")
    lines.append(f"audit: dlq.payload_shown {shown['audit_id']} (recorded by the access service "
                 "before it answered)")
    return lines


@app.command()
def show(
    position: str = typer.Argument(..., help="PARTITION:OFFSET as printed by `attest dlq list`."),
    payload: bool = typer.Option(False, "--payload", help="Also show the payload and raw bytes "
                                 "(they may hold protected fields in clear), from the access "
                                 "service at ATTEST_ACCESS_URL; needs --why and --token-file."),
    why: str = typer.Option("", "--why", help="Why the payload is shown (the service records it)."),
    token_file: Path | None = typer.Option(
        None, "--token-file", "-t", help="Your access token (a file, or - for standard input); "
        "the service shows the payload only to a role with permission dead_letters.payload."),
) -> None:
    """Show one dead letter: reason, origin, headers, the claimed JWS header, size and SHA-256.

    The payload is hidden. With --payload --why TEXT -t TOKEN_FILE the access service (`attest
    serve`) decides: it checks your token's role, commits a `dlq.payload_shown` audit record
    (who, which letter, why) and only then answers; nothing is shown if it refuses.
    """
    try:
        partition, offset = (int(x) for x in position.split(":"))
    except ValueError:
        fail(f"{position!r} is not PARTITION:OFFSET (for example 0:12)")
    if payload and not why.strip():
        fail("--payload needs --why TEXT: the access service records why a payload is shown",
             int(ExitCode.USAGE))
    if payload and token_file is None:
        fail("--payload needs --token-file FILE (your access token): the access service decides "
             "who may see a payload", int(ExitCode.USAGE))
    settings = get_settings()
    if payload:
        assert token_file is not None
        with operator_errors():
            shown = fetch_payload(settings.access_url, token_file, partition, offset, why)
        key = base64.b64decode(shown["key"]) if shown["key"] is not None else None
        _print_letter(shown["reason"], shown["origin"], shown["headers"], key, shown["bytes"],
                      shown["sha256"], _shown_lines(shown))
        return
    with operator_errors():
        letter: StoredLetter | None = next(
            (x for x in read_letters(settings) if (x.partition, x.offset) == (partition, offset)),
            None,
        )
    if letter is None:
        fail(f"no dead letter at {position}")
    _print_letter(letter.reason, letter.origin, letter.headers, letter.key, len(letter.value),
                  letter_digest(letter), _describe_token(letter.value), key_shown=False)
