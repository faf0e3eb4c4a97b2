"""Crypto-shredding a subject and rewrapping wrapping keys: the two operations that change keys at rest."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, and_, bindparam, delete, func, or_, select, text, update

from protection.fields import WrappingKeyRecord
from protection.tiers import ProtectionCatalog, Tier
from storage.db import engine_for, run_db
from storage.inference_models import InferenceRow
from storage.protected_models import FIELD_TABLES, DataKeyRow, TierWrappingKeyRow


@dataclass(frozen=True, slots=True)
class ForgetOutcome:
    """What ``forget_subject`` destroyed: data keys (by tier) and the rows they protected."""

    data_keys: int
    tiers: tuple[str, ...]
    event_ids: tuple[str, ...]
    inferences: int = 0  # model labels of those events, deleted with them
    recon_pending: int = 0  # pending reconciliation entries removed from ``recon_state``


def forget_subject(
    url: str,
    subject_refs: Mapping[str, bytes],
    catalog: ProtectionCatalog,
    before_commit: Callable[[ForgetOutcome], None],
    pending_state: Callable[[Connection, Sequence[str]], int] | None = None,
) -> ForgetOutcome:
    """Destroy every data key of the subject (per domain: its blind index), its indexes, the
    model labels of its events and (``pending_state``) its entries in the reconciliation
    state.

    Key rows stay as tombstones (``wrapped`` NULL, ``destroyed_at`` set) so that a later read
    says "forgotten". ``before_commit`` runs inside the transaction (the CLI publishes the
    audit record there): if it raises, nothing is destroyed. ``pending_state(conn, event_ids)``
    runs in the same transaction before it and returns how many pending reconciliation
    entries it removed (``operations.forgetting`` opens, filters and reseals ``recon_state``
    under row locks there).
    """

    def write() -> ForgetOutcome:
        with engine_for(url).begin() as conn:
            # First, so that batches in flight finish before any key is destroyed and later
            # batches see the new epoch (and drop every cached data key).
            conn.execute(text("UPDATE data_key_shredding SET epoch = epoch + 1 WHERE id = 1"))
            matches = or_(*(and_(DataKeyRow.subject_domain == domain, DataKeyRow.subject_ref == ref)
                            for domain, ref in subject_refs.items()))
            destroyed = conn.execute(
                update(DataKeyRow)
                .where(matches, DataKeyRow.destroyed_at.is_(None))
                .values(wrapped=None, wrapping_key_id=None, subject_ref=None,
                        destroyed_at=func.now())
                .returning(DataKeyRow.tier)
            ).all()
            event_ids: list[str] = []
            for schema in catalog.schemas.values():
                ref = subject_refs.get(schema.subject_domain)
                index_column = schema.field(schema.subject_field).index_column
                if ref is None or index_column is None:
                    continue
                table = FIELD_TABLES[schema.table]
                cleared = {f.index_column: None for f in schema.indexed_fields if f.index_column}
                event_ids += [str(r[0]) for r in conn.execute(
                    update(table).where(table.c[index_column] == ref).values(cleared)
                    .returning(table.c.event_id))]
            # A model label is read from the confidential text (a benefit application, a
            # salary payment): it goes with the keys, or it would outlive what it describes.
            labels = conn.execute(
                delete(InferenceRow).where(InferenceRow.event_id.in_(sorted(set(event_ids))))
            ).rowcount if event_ids else 0
            # The matcher's pending state holds the values of records still in their window.
            pending = pending_state(conn, sorted(set(event_ids))) if pending_state else 0
            outcome = ForgetOutcome(len(destroyed), tuple(sorted({r[0] for r in destroyed})),
                                    tuple(sorted(event_ids)), labels, pending)
            before_commit(outcome)
            return outcome

    return run_db(write)


def rewrap_wrapping_keys(
    url: str, tier: Tier, target_version: int,
    rewrap: Callable[[WrappingKeyRecord], WrappingKeyRecord],
    before_commit: Callable[[int], None] = lambda count: None,
) -> int:
    """Reseal every wrapping key of ``tier`` older than ``target_version``, in one transaction.

    Data keys and field ciphertexts are not touched: they stay wrapped by the same wrapping
    keys, whose sealed form alone changes. ``before_commit(count)`` runs inside the
    transaction (the CLI audits there); if it raises, nothing changes.
    """

    def write() -> int:
        with engine_for(url).begin() as conn:
            rows = conn.execute(
                select(TierWrappingKeyRow.id, TierWrappingKeyRow.kek_version,
                       TierWrappingKeyRow.sealed)
                .where(TierWrappingKeyRow.tier == tier.label,
                       TierWrappingKeyRow.kek_version < target_version)
                .with_for_update()
            ).all()
            updates = []
            for r in rows:
                fresh = rewrap(WrappingKeyRecord(r.id, tier, r.kek_version, bytes(r.sealed)))
                updates.append({"key_id": r.id, "version": fresh.kek_version,
                                "sealed": fresh.sealed})
            if updates:
                conn.execute(
                    update(TierWrappingKeyRow)
                    .where(TierWrappingKeyRow.id == bindparam("key_id"))
                    .values(kek_version=bindparam("version"), sealed=bindparam("sealed"),
                            rewrapped_at=func.now()),
                    updates,
                )
            before_commit(len(updates))
            return len(updates)

    return run_db(write)


def wrapping_key_versions(url: str) -> dict[tuple[str, int], int]:
    """How many wrapping keys are sealed to each (tier, key version)."""

    def read() -> dict[tuple[str, int], int]:
        with engine_for(url).connect() as conn:
            rows = conn.execute(
                select(TierWrappingKeyRow.tier, TierWrappingKeyRow.kek_version, func.count())
                .group_by(TierWrappingKeyRow.tier, TierWrappingKeyRow.kek_version)
            ).all()
        return {(r[0], int(r[1])): int(r[2]) for r in rows}

    return run_db(read)


