"""Removing one data subject from the matchers' pending state (``attest forget``).

The pending state (``recon_state``) holds the values of records still inside their matching
window: amounts, references, names and remittance text of unmatched transactions (finance),
income and tax paid of people waiting for the other agency's document (government). When a
subject is forgotten, its entries leave that state too. These functions work on the opened
state (plain JSON values, as ``Reconciler.state`` and ``ConsistencyStage`` write them) and
change it in place; sealing and locking are the caller's.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any


def drop_account(state: dict[str, Any], account_index: str, event_ids: Collection[str] = ()) -> int:
    """Remove the pending records of one account (its blind index, hex) from a finance state.

    Also drops the duplicate fingerprints of ``event_ids`` (the subject's stored records,
    already matched), which hash the same values. Record ids in ``seen`` stay: they carry no
    value, and they keep a redelivered record of the subject from entering the state again.
    Returns how many distinct pending records were removed.
    """
    removed: set[str] = set()
    for sides in state.get("pools", {}).values():
        for side in ("left", "right"):
            kept = []
            for record in sides.get(side, []):
                if record.get("account_key") == account_index:
                    removed.add(record["record_id"])
                else:
                    kept.append(record)
            sides[side] = kept
    gone = removed | set(event_ids)
    for name, rows in state.get("known", {}).items():
        state["known"][name] = [row for row in rows if row[1] not in gone]
    return len(removed)


def drop_person(state: dict[str, Any], person_index: str) -> int:
    """Remove one person's (national-id blind index, hex) pending documents from a
    government state. Returns how many documents were removed."""
    documents = state.get("pending", {}).pop(person_index, None) or {}
    state.get("since", {}).pop(person_index, None)
    return len(documents)


def drop_subject(state: dict[str, Any], account_index: str | None, person_index: str | None,
                 event_ids: Collection[str] = ()) -> int:
    """``drop_account`` on a finance state, ``drop_person`` on a government one (told apart by
    their shape); returns the number of pending entries removed."""
    if "pools" in state:
        return drop_account(state, account_index or "", event_ids)
    if "pending" in state:
        return drop_person(state, person_index) if person_index else 0
    return 0
