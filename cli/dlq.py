"""``attest dlq``: read the dead-letter topic."""

from __future__ import annotations

import json
from collections import Counter

import typer
from rich.table import Table
from rich.text import Text

from cli.output import console, fail
from config.settings import get_settings
from security.errors import Rejection
from security.jws import parse_json_object
from security.signatures import b64url_decode
from streams.dead_letters import StoredLetter, read_letters

app = typer.Typer(help="Inspect rejected messages in the dead-letter topic.", no_args_is_help=True)


@app.command("list")
def list_letters(
    reason: str | None = typer.Option(None, help="Only this reason code, e.g. bad_signature."),
    limit: int = typer.Option(50, min=1, help="Show at most this many (the newest)."),
) -> None:
    """List dead letters: position, reason, where they came from, and the detail.

    Ends with a count per reason over the whole topic.
    """
    letters = list(read_letters(get_settings()))
    counts = Counter(letter.reason for letter in letters)
    shown = [letter for letter in letters if reason is None or letter.reason == reason][-limit:]
    table = Table("dlq position", "reason", "from", "bytes", "detail")
    for letter in shown:
        # Text cells: a detail may quote attacker-chosen strings (a kid like "[/x]") that
        # Rich would otherwise parse as markup.
        table.add_row(*(Text(cell) for cell in (
            letter.position, letter.reason, letter.origin, str(len(letter.value)),
            letter.headers.get("attest-detail", "")[:80])))
    console.print(table)
    console.print("  ".join(f"{r}: {n}" for r, n in sorted(counts.items())) or "no dead letters",
                  markup=False)


def _describe_token(value: bytes) -> list[str]:
    """Best-effort view of what the message claims, for a human; nothing here is trusted."""
    parts = value.split(b".")
    if len(parts) != 3:
        return [f"not a compact JWS ({len(parts)} parts)"]
    lines = []
    for name, part in (("header", parts[0]), ("payload", parts[1])):
        try:
            decoded = parse_json_object(b64url_decode(part), name)
            lines.append(f"{name}: {json.dumps(decoded, ensure_ascii=False)[:2000]}")
        except (ValueError, Rejection) as exc:
            lines.append(f"{name}: unreadable ({exc})")
    return lines


@app.command()
def show(
    position: str = typer.Argument(..., help="PARTITION:OFFSET as printed by `attest dlq list`."),
) -> None:
    """Show one dead letter in full: headers, the claimed header and payload, the raw bytes."""
    try:
        partition, offset = (int(x) for x in position.split(":"))
    except ValueError:
        fail(f"{position!r} is not PARTITION:OFFSET (for example 0:12)")
    letter: StoredLetter | None = next(
        (x for x in read_letters(get_settings()) if (x.partition, x.offset) == (partition, offset)),
        None,
    )
    if letter is None:
        fail(f"no dead letter at {position}")
    console.print(f"{letter.reason} from {letter.origin}", markup=False)
    for key, value in sorted(letter.headers.items()):
        console.print(f"  {key}: {value}", markup=False)
    console.print(f"  key: {letter.key!r}", markup=False)
    for line in _describe_token(letter.value):
        console.print(f"  {line}", markup=False)
    raw = letter.value[:512]
    console.print(f"  raw ({len(letter.value)} bytes): {raw!r}{'...' if len(letter.value) > 512 else ''}",
                  markup=False)
