"""Crypto-shredding a subject and rotating a tier's keys: the operations that change keys at rest."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, text, update

from protection.fields import DataKeyRecord, WrappingKeyRecord
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


#: What rotation hands a batch to: the data keys to move and the old wrapping keys they are
#: under; it returns the new wrapping key and each data key's new wrapped form.
Rewrap = Callable[[Sequence[DataKeyRecord], Mapping[uuid.UUID, WrappingKeyRecord]], "Rewrapped"]


class Rewrapped(Protocol):
    """A batch re-wrapped (``protection.rotation.RewrappedBatch`` fits)."""

    @property
    def wrapping_key(self) -> WrappingKeyRecord: ...

    @property
    def wrapped(self) -> Mapping[uuid.UUID, bytes]: ...


def advance_key_epoch(conn: Connection) -> None:
    """Advance ``data_key_shredding.epoch`` inside ``conn``'s transaction.

    The row is share-locked by every storing transaction, so this waits for batches in flight;
    a batch stored after the commit sees the new epoch and drops its cached data and wrapping
    keys (and re-reads its keyring). Forgetting uses the same counter.
    """
    conn.execute(text("UPDATE data_key_shredding SET epoch = epoch + 1 WHERE id = 1"))


def _old_keys_filter(tier: Tier, target_version: int) -> Any:
    return and_(DataKeyRow.tier == tier.label, DataKeyRow.destroyed_at.is_(None),
                TierWrappingKeyRow.tier == tier.label,
                TierWrappingKeyRow.kek_version < target_version)


def count_keys_to_move(url: str, tier: Tier, target_version: int) -> int:
    """Live data keys of ``tier`` still wrapped by a wrapping key sealed before ``target_version``."""

    def read() -> int:
        with engine_for(url).connect() as conn:
            return int(conn.execute(
                select(func.count()).select_from(DataKeyRow)
                .join(TierWrappingKeyRow, TierWrappingKeyRow.id == DataKeyRow.wrapping_key_id)
                .where(_old_keys_filter(tier, target_version))
            ).scalar_one())

    return run_db(read)


def _move_batch(conn: Connection, tier: Tier, target_version: int, rewrap: Rewrap,
                batch_size: int) -> int:
    """Re-wrap up to ``batch_size`` data keys under one new wrapping key, in ``conn``."""
    rows = conn.execute(
        select(DataKeyRow.id, DataKeyRow.subject_domain, DataKeyRow.subject_ref,
               DataKeyRow.wrapping_key_id, DataKeyRow.wrapped)
        .join(TierWrappingKeyRow, TierWrappingKeyRow.id == DataKeyRow.wrapping_key_id)
        .where(_old_keys_filter(tier, target_version))
        .order_by(DataKeyRow.id)
        .limit(batch_size)
        .with_for_update(of=DataKeyRow)
    ).all()
    # A forget that committed while we waited for a row lock leaves that row destroyed.
    records = [DataKeyRecord(r.id, tier, r.subject_domain, bytes(r.subject_ref), r.wrapping_key_id,
                             bytes(r.wrapped)) for r in rows
               if r.wrapped is not None and r.subject_ref is not None]
    if not records:
        return 0
    old = {
        r.id: WrappingKeyRecord(r.id, tier, int(r.kek_version), bytes(r.sealed))
        for r in conn.execute(
            select(TierWrappingKeyRow.id, TierWrappingKeyRow.kek_version, TierWrappingKeyRow.sealed)
            .where(TierWrappingKeyRow.id.in_(sorted({d.wrapping_key_id for d in records}))))
    }
    done = rewrap(records, old)
    new = done.wrapping_key
    conn.execute(insert(TierWrappingKeyRow).values(
        id=new.key_id, tier=tier.label, kek_version=new.kek_version, sealed=new.sealed))
    # One statement for the batch (executemany cost ~0.5 ms a row): ids and wrapped keys as
    # two array parameters, joined back by unnest.
    ids, wrapped = zip(*done.wrapped.items(), strict=True)
    conn.execute(
        text("UPDATE data_keys AS d SET wrapping_key_id = CAST(:wrapping_key AS uuid), "
             "wrapped = u.wrapped "
             "FROM unnest(CAST(:ids AS uuid[]), CAST(:wrapped AS bytea[])) AS u(id, wrapped) "
             "WHERE d.id = u.id AND d.destroyed_at IS NULL"),
        {"wrapping_key": str(new.key_id), "ids": [str(i) for i in ids], "wrapped": list(wrapped)},
    )
    return len(records)


def move_data_keys(url: str, tier: Tier, target_version: int, rewrap: Rewrap,
                   batch_size: int) -> int:
    """One batch in one transaction: how many data keys moved (0: none left to move).

    Interrupted, a rotation loses at most the batch in hand: every committed batch has its
    new wrapping key stored beside the data keys it wraps.
    """

    def write() -> int:
        with engine_for(url).begin() as conn:
            return _move_batch(conn, tier, target_version, rewrap, batch_size)

    return run_db(write)


def finish_rotation(url: str, tier: Tier, target_version: int, rewrap: Rewrap,
                    batch_size: int) -> tuple[int, int]:
    """Move any data key still under an old wrapping key, then delete every wrapping key of
    ``tier`` sealed before ``target_version`` that no data key uses; one transaction.

    It first advances the key epoch: batches in flight finish before anything is deleted,
    and a running worker drops its cached wrapping key (which may be one deleted here)
    before it wraps another data key. Returns (data keys moved, wrapping keys deleted).
    """

    def write() -> tuple[int, int]:
        with engine_for(url).begin() as conn:
            advance_key_epoch(conn)
            moved = 0
            while step := _move_batch(conn, tier, target_version, rewrap, batch_size):
                moved += step
            used = select(DataKeyRow.id).where(DataKeyRow.wrapping_key_id == TierWrappingKeyRow.id)
            deleted = conn.execute(
                delete(TierWrappingKeyRow)
                .where(TierWrappingKeyRow.tier == tier.label,
                       TierWrappingKeyRow.kek_version < target_version, ~used.exists())
            ).rowcount
            return moved, int(deleted)

    return run_db(write)


def start_rotation(url: str) -> None:
    """Advance the key epoch on its own, so running workers re-read their keyring now and seal
    new wrapping keys to the new version before data keys are moved."""

    def write() -> None:
        with engine_for(url).begin() as conn:
            advance_key_epoch(conn)

    run_db(write)


def with_version_locked(url: str, tier: Tier, version: int,
                        act: Callable[[int], None]) -> int:
    """Call ``act(n)`` with n the wrapping keys of ``tier`` sealed to ``version``, while no
    writer can store: the epoch row is locked as a forget locks it, without advancing it.

    ``attest keys retire-kek`` refuses inside ``act`` when n > 0 and removes the version from
    the keyring file otherwise; no batch stores a key under that version meanwhile.
    """

    def write() -> int:
        with engine_for(url).begin() as conn:
            conn.execute(text("SELECT epoch FROM data_key_shredding WHERE id = 1 FOR UPDATE"))
            count = int(conn.execute(
                select(func.count()).select_from(TierWrappingKeyRow)
                .where(TierWrappingKeyRow.tier == tier.label,
                       TierWrappingKeyRow.kek_version == version)
            ).scalar_one())
            act(count)
            return count

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


