"""Each fault case writes one row of the reliability table (docs/reliability.md).

Rows are merged by fault name into one JSON file, so the table always shows the newest run
of every case; ``python -m bench.reliability_report`` renders it.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from tests.faults.checks import Outcome

#: Where rows go; ATTEST_FAULTS_RESULTS overrides (CI keeps it under its artifacts).
DEFAULT_RESULTS = Path(__file__).resolve().parents[2] / ".attest" / "reliability" / "faults.json"


def results_path() -> Path:
    return Path(os.environ.get("ATTEST_FAULTS_RESULTS", str(DEFAULT_RESULTS)))


def record(fault: str, outcome: Outcome, recovery_s: float | None, note: str = "",
           lost_upstream: int = 0) -> None:
    """Merge this case's row into the results file (written atomically)."""
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError):
        rows = {}
    rows[fault] = {
        "fault": fault,
        "sent": outcome.sent,
        "expected_stored": outcome.expected_stored,
        "expected_rejected": outcome.expected_rejected,
        "stored": outcome.stored,
        "dead_lettered": outcome.dead_lettered,
        "lost": outcome.lost,
        "lost_upstream": lost_upstream,
        "duplicated": outcome.duplicated,
        "unaudited": len(outcome.audit_missing),
        "raw_dead_letters": outcome.raw_letters,
        "raw_dead_letter_duplicates": outcome.raw_letter_duplicates,
        "recovery_s": None if recovery_s is None else round(recovery_s, 1),
        "note": note,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=2, sort_keys=True))
    os.replace(tmp, path)
