"""docs/events.md is the contract for audit actions: every action the code writes is listed."""

from __future__ import annotations

import re
from pathlib import Path

from schemas.audit import AuditAction

EVENTS_MD = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def test_every_audit_action_has_a_row_in_docs_events_md() -> None:
    rows = [line for line in EVENTS_MD.read_text().splitlines() if line.startswith("| `")]
    documented = {name for row in rows for name in re.findall(r"`([a-z_]+\.[a-z_]+)`", row.split("|")[1])}
    missing = sorted(a.value for a in AuditAction if a.value not in documented)
    assert not missing, f"audit actions without a row in docs/events.md: {missing}"
