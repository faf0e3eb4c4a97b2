"""``attest recon report``: matches and breaks from the database, as one report.

The report itself is ``reconcile.report``'s (pure); this module gathers what it needs: the
stored matches and breaks, the break amounts (sealed at rest, opened here when this host
holds the worker's reconciliation key), and a generated run's ground truth.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from config.settings import Settings, secret_environ
from operations.errors import ActionRefused
from reconcile.report import build_report, write_chart
from storage.reconciliation import BreakRow, list_breaks, list_matches


def break_amounts(settings: Settings, breaks: list[BreakRow]) -> dict[str, Decimal] | None:
    """Break amounts, opened with the worker key file's reconciliation key (None without it)."""
    try:
        from protection.keyring_sources import open_writer_keyring
        from reconcile.sealing import StateKey

        keyring = open_writer_keyring(settings.state_dir, secret_environ())
        key = StateKey.derive(keyring.blind_index_key("account").material)
        return {b.break_id: Decimal(key.open(b.amount_sealed, f"amount|{b.break_id}".encode()).decode())
                for b in breaks if b.amount_sealed is not None}
    except Exception:  # noqa: BLE001 - no key file here, or another one: amounts stay sealed
        return None


def _read_truth(truth: Path) -> dict[str, Any]:
    try:
        data = json.loads(truth.read_text(encoding="utf-8"))
        data["pairings"]
    except (ValueError, KeyError, TypeError):
        raise ActionRefused(f"{truth} is not a truth file written by `attest produce --truth`") from None
    return data  # type: ignore[no-any-return]


def recon_report(settings: Settings, since: datetime | None, truth: Path | None = None,
                 chart: Path | None = None, now: datetime | None = None) -> dict[str, Any]:
    """The report of matches and breaks from ``since`` (JSON-ready); with ``truth``, precision
    and recall per stage; with ``chart``, the PNG is written too.

    Raises ``ActionRefused`` for a truth file that ``attest produce --truth`` did not write
    (checked before the database is read). ``now`` (default: the current time) is what ages
    are measured from; the CLI passes the instant it read ``--since`` against.
    """
    now = now or datetime.now(UTC)
    truth_data = _read_truth(truth) if truth is not None else None
    matches = list_matches(settings.database_url, since)
    breaks = list_breaks(settings.database_url, since)
    result = build_report(matches, breaks, now, break_amounts(settings, breaks), truth_data)
    if chart is not None:
        write_chart(result, chart)
    return result
