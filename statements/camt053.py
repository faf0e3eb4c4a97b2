"""ISO 20022 camt.053 (bank-to-customer statement) via lxml.

Elements are found by local name, so every published version of the message
(camt.053.001.02 to .13) reads the same. Each ``Ntry`` is one entry; its ``TxDtls`` (one, or
several for a batch booked as one line) give references, the counterparty and the remittance
text. A reversal (``RvslInd`` true) flips the credit/debit mark, as the standard says.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation

from lxml import etree

from statements.entries import NO_REFERENCE, Entry
from statements.errors import StatementError

_UNKNOWN_REFS = {"", "NONREF", "NOTPROVIDED", "NONE"}


def _all(node: etree._Element, path: str) -> list[etree._Element]:
    steps = "/".join(f"*[local-name()='{step}']" for step in path.split("/"))
    return node.xpath(steps)  # type: ignore[no-any-return]


def _text(node: etree._Element, path: str) -> str:
    found = _all(node, path)
    return (found[0].text or "").strip() if found else ""


def _required(node: etree._Element, path: str, what: str) -> str:
    value = _text(node, path)
    if not value:
        raise StatementError(f"{what} is missing ({path})", node.sourceline)
    return value


def _date(node: etree._Element, path: str) -> date | None:
    text = _text(node, f"{path}/Dt") or _text(node, f"{path}/DtTm")
    if not text:
        return None
    try:
        return date.fromisoformat(text[:10]) if len(text) >= 10 else None
    except ValueError:
        raise StatementError(f"{path} {text!r} is not a date", _all(node, path)[0].sourceline) from None


def parse_camt053(data: bytes) -> list[Entry]:
    """Every entry of every ``Stmt`` of a camt.053 document; errors name the line."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise StatementError(f"not well-formed XML ({exc.msg})", exc.lineno) from None
    statements = _all(root, "BkToCstmrStmt/Stmt")
    if etree.QName(root).localname != "Document" or not statements:
        raise StatementError("not a camt.053 document (no Document/BkToCstmrStmt/Stmt)", root.sourceline)
    out: list[Entry] = []
    for statement in statements:
        account = _text(statement, "Acct/Id/IBAN") or _text(statement, "Acct/Id/Othr/Id")
        if len(account) < 5:
            raise StatementError("the statement has no account (Acct/Id/IBAN or Othr/Id)",
                                 statement.sourceline)
        statement_id = _required(statement, "Id", "the statement id")
        for index, entry in enumerate(_all(statement, "Ntry")):
            out.append(_entry(entry, account, statement_id, index))
    if not out:
        raise StatementError("the statement has no entries (Ntry)", statements[0].sourceline)
    return out


def _entry(node: etree._Element, account: str, statement_id: str, index: int) -> Entry:
    amounts = _all(node, "Amt")
    if not amounts:
        raise StatementError("the entry has no amount (Amt)", node.sourceline)
    try:
        amount = Decimal((amounts[0].text or "").strip())
    except InvalidOperation:
        raise StatementError(f"amount {amounts[0].text!r} is not a number", amounts[0].sourceline) from None
    currency = amounts[0].get("Ccy", "")
    if len(currency) != 3:
        raise StatementError("the amount has no Ccy currency code", amounts[0].sourceline)
    mark = _required(node, "CdtDbtInd", "the credit/debit mark")
    if mark not in {"CRDT", "DBIT"}:
        raise StatementError(f"credit/debit mark {mark!r} is neither CRDT nor DBIT", node.sourceline)
    # The related party is named as in the original booking, before a reversal flips it.
    party = "RltdPties/Dbtr" if mark == "CRDT" else "RltdPties/Cdtr"
    if _text(node, "RvslInd").lower() == "true":
        mark = "DBIT" if mark == "CRDT" else "CRDT"
    credit = mark == "CRDT"
    value_date = _date(node, "ValDt") or _date(node, "BookgDt")
    if value_date is None:
        raise StatementError("the entry has no value or booking date", node.sourceline)
    details = _all(node, "NtryDtls/TxDtls")
    refs, names, texts = [], [], []
    for tx in details:
        for path in ("Refs/EndToEndId", "RmtInf/Strd/CdtrRefInf/Ref", "Refs/InstrId", "Refs/TxId"):
            ref = _text(tx, path)
            if ref and ref.upper() not in _UNKNOWN_REFS:
                refs.append(ref)
                break
        name = _text(tx, f"{party}/Nm") or _text(tx, f"{party}/Pty/Nm")
        if name and name not in names:
            names.append(name)
        texts += [(u.text or "").strip() for u in _all(tx, "RmtInf/Ustrd") if (u.text or "").strip()]
    own_ref = _text(node, "AcctSvcrRef") or _text(node, "NtryRef")
    reference = refs[0] if len(refs) == 1 else (own_ref if own_ref else NO_REFERENCE)
    if len(refs) > 1:  # a batch line: every reference goes into the remittance text
        texts.insert(0, " ".join(refs))
    memo = " ".join(texts) or _text(node, "AddtlNtryInf")
    return Entry(
        account=account, statement_id=statement_id, index=index, amount=abs(amount), currency=currency,
        direction="credit" if credit else "debit", value_date=value_date,
        entry_date=_date(node, "BookgDt"), reference=reference, counterparty=", ".join(names),
        memo=memo, line=node.sourceline or 0,
    )


__all__ = ["parse_camt053"]
