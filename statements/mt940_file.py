"""MT940 statements (SWIFT customer statement) via the ``mt-940`` library.

The library parses the tags; this module checks the file's shape first (so an error names
the line), maps each ``:61:`` line and its ``:86:`` details to an ``Entry``, and reads the
three ``:86:`` styles banks use: German structured sub-fields (``?20``, ``?32``, ...) that
the library splits, slash-keyed fields (``/NAME/.../REMI/.../EREF/...``), and free text.
"""

from __future__ import annotations

import contextlib
import io
import re
from datetime import date
from decimal import Decimal, InvalidOperation

import mt940

from statements.entries import NO_REFERENCE, Entry
from statements.errors import StatementError

_TAG = re.compile(r"^:(?P<tag>\d{2}[A-Z]?|NS):")
_KNOWN = {"20", "21", "25", "28", "28C", "60F", "60M", "61", "62F", "62M", "64", "65", "86", "NS",
          "13D", "34F", "90D", "90C"}
_MULTILINE = {"86", "61", "NS"}
_SLASH_KEYS = re.compile(r"/(TRTP|IBAN|BIC|NAME|REMI|EREF|CSID|MARF|ORDP|BENM|ID|ADDR|RTRN|PREF)/")
_UNKNOWN_REFS = {"", "NONREF", "NOTPROVIDED", "NONE"}


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "latin-1"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise StatementError("the file is not text")  # pragma: no cover - latin-1 decodes anything


def _check_shape(lines: list[str]) -> list[int]:
    """Line numbers (1-based) of the ``:61:`` lines; raises on text that is no MT940."""
    started, current = False, None
    entries: list[int] = []
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r")
        if not line.strip() or line.strip() in {"-", "-}", "}"}:
            continue
        match = _TAG.match(line)
        if match:
            tag = match.group("tag")
            if tag not in _KNOWN:
                raise StatementError(f"unknown MT940 tag :{tag}:", number)
            started, current = True, tag
            if tag == "61":
                entries.append(number)
            continue
        if not started and line.lstrip().startswith("{"):
            continue  # SWIFT block headers ({1:...}{2:...}{4:)
        if current in _MULTILINE:
            continue
        what = "text before the first tag" if not started else f"unexpected text after :{current}:"
        raise StatementError(f"{what}: not an MT940 statement", number)
    if not started:
        raise StatementError("no MT940 tags found (is this an MT940 file?)", 1)
    return entries


def _line_of(lines: list[str], value: str) -> int | None:
    first = value.strip().splitlines()[0] if value.strip() else ""
    for number, line in enumerate(lines, 1):
        if first and first in line and _TAG.match(line):
            return number
    return None


def _slash_fields(details: str) -> dict[str, str]:
    text = details.replace("\n", "")
    parts = _SLASH_KEYS.split(text)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def _reference(data: dict[str, object], slash: dict[str, str]) -> str:
    for candidate in (data.get("end_to_end_reference"), slash.get("EREF"), data.get("customer_reference"),
                      data.get("bank_reference")):
        text = str(candidate or "").strip()
        if text.upper() not in _UNKNOWN_REFS:
            return text
    return NO_REFERENCE


def _direction(status: str, amount: Decimal) -> str:
    """D and RC (reversal of a credit) take money out; C and RD put it in."""
    status = status.upper()
    if status in {"D", "RC"}:
        return "debit"
    if status in {"C", "RD"}:
        return "credit"
    return "credit" if amount >= 0 else "debit"


def parse_mt940(data: bytes) -> list[Entry]:
    """Every entry of every statement in an MT940 file; raises ``StatementError`` naming a line."""
    text = _decode(data).replace("\r\n", "\n")
    lines = text.split("\n")
    entry_lines = _check_shape(lines)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            statements = mt940.parse_statements(text, options=mt940.Options.all())
    except Exception as exc:  # noqa: BLE001 - the library raises RuntimeError/ValueError/...
        value = str(exc.args[2]) if len(exc.args) > 2 else ""
        tag = getattr(exc.args[1], "id", None) if len(exc.args) > 1 else None
        what = f"the :{tag}: field cannot be parsed" if tag else "an MT940 field cannot be parsed"
        raise StatementError(what, _line_of(lines, value)) from None
    out: list[Entry] = []
    position = 0
    for statement in statements:
        head = statement.data
        account = str(head.get("account_identification") or "").strip()
        statement_id = "/".join(str(head.get(k) or "") for k in
                                ("transaction_reference", "statement_number", "sequence_number"))
        for index, transaction in enumerate(statement):
            line = entry_lines[position] if position < len(entry_lines) else None
            position += 1
            out.append(_entry(transaction.data, account, statement_id, index, line))
    if not out:
        raise StatementError("the statement has no :61: entries", 1)
    return out


def _entry(data: dict[str, object], account: str, statement_id: str, index: int, line: int | None) -> Entry:
    if len(account) < 5:
        raise StatementError("the entry's statement has no :25: account of 5 or more characters", line)
    try:
        amount = Decimal(str(data["amount"].amount))  # type: ignore[union-attr]
    except (KeyError, AttributeError, InvalidOperation):
        raise StatementError("the :61: amount cannot be read", line) from None
    details = str(data.get("transaction_details") or "")
    slash = _slash_fields(details) if _SLASH_KEYS.search(details) else {}
    counterparty = str(data.get("applicant_name") or slash.get("NAME") or "").strip()
    memo = str(data.get("purpose") or slash.get("REMI") or details).replace("\n", " ").strip()
    entry_date = data.get("entry_date")
    return Entry(
        account=account, statement_id=statement_id, index=index, amount=abs(amount),
        currency=str(data.get("currency") or getattr(data.get("amount"), "currency", "") or ""),
        direction=_direction(str(data.get("status") or ""), amount),
        value_date=_plain(data["date"]),
        entry_date=_plain(entry_date) if entry_date else None,
        reference=_reference(data, slash), counterparty=counterparty, memo=memo, line=line or 0,
    )


def _plain(value: object) -> date:
    """The library's ``Date`` subclass as a plain ``datetime.date``."""
    if not isinstance(value, date):
        raise StatementError("an entry has no value date")
    return date(value.year, value.month, value.day)
