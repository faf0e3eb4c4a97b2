"""The fault suite's checks: the ledger in ``bench.ledger`` (shared with ``attest bench soak``)."""

from __future__ import annotations

from bench.ledger import Outcome, audit_verify, observe

__all__ = ["Outcome", "audit_verify", "observe"]
