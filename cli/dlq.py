"""``attest dlq``: read the dead-letter topic."""

from __future__ import annotations

import json

import typer
from rich.table import Table
from rich.text import Text

from cli.exit_codes import operator_errors
from cli.keys import operator
from cli.output import console, fail
from cli.replay import finish, run_replay
from config.settings import get_settings
from operations.letter_payload import letter_digest, reveal_payload
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


def _describe_token(value: bytes, with_payload: bool) -> list[str]:
    """Best-effort view of what the message claims, for a human; nothing here is trusted."""
    parts = value.split(b".")
    if len(parts) != 3:
        return [f"not a compact JWS ({len(parts)} parts)"]
    lines = []
    for name, part in (("header", parts[0]), ("payload", parts[1])):
        if name == "payload" and not with_payload:
            lines.append(f"payload: hidden ({len(part)} bytes of base64url; it may hold protected "
                         "fields in clear: --payload --why TEXT shows it, audited)")
            continue
        try:
            decoded = parse_json_object(b64url_decode(part), name)
            lines.append(f"{name}: {json.dumps(decoded, ensure_ascii=False)[:2000]}")
        except (ValueError, Rejection) as exc:
            lines.append(f"{name}: unreadable ({exc})")
    return lines


@app.command()
def show(
    position: str = typer.Argument(..., help="PARTITION:OFFSET as printed by `attest dlq list`."),
    payload: bool = typer.Option(False, "--payload", help="Also show the payload and raw bytes "
                                 "(they may hold protected fields in clear); audited, needs --why."),
    why: str = typer.Option("", "--why", help="Why the payload is shown (goes into the audit record)."),
) -> None:
    """Show one dead letter: reason, origin, headers, the claimed JWS header, size and SHA-256.

    The payload is hidden unless --payload --why TEXT is given; then a `dlq.payload_shown`
    audit record (who, which letter, why) is sent first, and nothing is shown if it cannot be.
    """
    try:
        partition, offset = (int(x) for x in position.split(":"))
    except ValueError:
        fail(f"{position!r} is not PARTITION:OFFSET (for example 0:12)")
    if payload and not why.strip():
        fail("--payload needs --why TEXT: showing a payload is audited")
    settings = get_settings()
    letter: StoredLetter | None = next(
        (x for x in read_letters(settings) if (x.partition, x.offset) == (partition, offset)),
        None,
    )
    if letter is None:
        fail(f"no dead letter at {position}")
    console.print(f"{letter.reason} from {letter.origin}", markup=False)
    for key, value in sorted(letter.headers.items()):
        console.print(f"  {key}: {value}", markup=False)
    console.print(f"  key: {letter.key!r}", markup=False)
    console.print(f"  bytes: {len(letter.value)}, sha256 {letter_digest(letter)}", markup=False)
    if payload:
        with operator_errors():
            reveal_payload(settings, letter, why, operator())
    for line in _describe_token(letter.value, with_payload=payload):
        console.print(f"  {line}", markup=False)
    if payload:
        raw = letter.value[:512]
        console.print(f"  raw ({len(letter.value)} bytes): {raw!r}{'...' if len(letter.value) > 512 else ''}",
                      markup=False)
