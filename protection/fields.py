"""Field protection for whole events: the writer's ``FieldProtector`` and the reader's ``FieldReader``.

The writer splits a verified payload by tier (``schemas/tiers.yaml``): public fields stay in
clear, every other field is sealed under the data key of (subject, tier), and identifiers get
a blind index. It mints data keys and wrapping keys itself and seals wrapping keys to the
tiers' *public* keys, so a worker needs no private key and cannot read what it stored.

Data keys live in this process's memory only while it uses them (an LRU); each is used by one
process, so its use count is exact and it is replaced long before AES-GCM's 2^32-message
limit or its cryptoperiod. The storage layer persists new key records in the same transaction
as the fields they protect and tells the protector when they are durable (``confirm_stored``).
Every ``attest forget`` advances the database's shredding epoch; a batch sealed under a newer
epoch than the protector last saw starts from an empty key cache, so nothing new is ever
sealed under a key that was destroyed meanwhile.

The reader opens only fields an ``AccessDecision`` allowed, with the tiers its keyring holds.
No SQL here: storage hands in key records and ciphertexts, and takes sealed events back.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from protection import envelope
from protection.blind_index import blind_index
from protection.envelope import DataKey, WrappingKey
from protection.errors import KeyringError
from protection.keyring import Keyring
from protection.keyring_sources import open_writer_keyring
from protection.tiers import PROTECTED_TIERS, ProtectionCatalog, SchemaProtection, Tier, protection_catalog

#: Replace a data or wrapping key after this many encryptions (AES-GCM with random nonces is
#: limited to 2^32 per key by NIST SP 800-38D; we stay far below).
MAX_KEY_USES = 2**30
#: Cryptoperiods (NIST SP 800-57 allows up to 2 years of encrypting; we rotate much sooner).
DATA_KEY_MAX_AGE = timedelta(days=30)
WRAPPING_KEY_MAX_AGE = timedelta(days=1)
DATA_KEY_CACHE = 100_000
#: A cached data key unused for this long is dropped from memory; the subject's next event
#: gets a fresh one (one more key record). Keys then live in memory only while their subject
#: is active, and the cache's size follows the subjects of the last minutes instead of
#: creeping up to ``DATA_KEY_CACHE`` over hours (the soak, docs/reliability.md).
DATA_KEY_IDLE = timedelta(minutes=5)
#: How often a worker re-reads its keyring file to pick up a rotated tier key (the default of
#: ``ATTEST_KEYRING_REFRESH_S``); a rotation also makes it re-read at its next batch.
KEYRING_REFRESH = timedelta(seconds=30)

log = logging.getLogger(__name__)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_encode_string = json.encoder.encode_basestring  # the C implementation where available


def _encode(value: Any) -> bytes:
    """A field value as sealed: its compact JSON, so strings and integers both round-trip."""
    if type(value) is str:  # the common case, without the encoder's dispatch
        return _encode_string(value).encode("utf-8")
    return _ENCODER.encode(value).encode("utf-8")


class EventFields(Protocol):
    """What the protector needs of a verified event (``storage.events.StoredEvent`` fits)."""

    @property
    def event_id(self) -> str: ...

    @property
    def typ(self) -> str: ...

    @property
    def payload(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class WrappingKeyRecord:
    """A wrapping key as stored: sealed to its tier's key-encryption key ``kek_version``."""

    key_id: uuid.UUID
    tier: Tier
    kek_version: int
    sealed: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class DataKeyRecord:
    """A data key as stored: wrapped, bound to its subject; ``wrapped`` is None once destroyed."""

    key_id: uuid.UUID
    tier: Tier
    subject_domain: str
    subject_ref: bytes | None = field(repr=False)
    wrapping_key_id: uuid.UUID | None
    wrapped: bytes | None = field(repr=False)
    destroyed_at: datetime | None = None


@dataclass(slots=True)
class SealedEvent:
    """One event split for storage: public payload in clear, protected columns, blind indexes."""

    event_id: str
    typ: str
    table: str
    department: str
    public_payload: dict[str, Any]
    columns: dict[str, bytes] = field(repr=False)
    indexes: dict[str, bytes] = field(repr=False)


@dataclass(frozen=True)
class SealedBatch:
    """A batch ready for one transaction, with the key records it needs stored beside it."""

    events: list[SealedEvent]
    wrapping_keys: list[WrappingKeyRecord]
    data_keys: list[DataKeyRecord]
    used_data_keys: frozenset[uuid.UUID]
    _pending: tuple[_InUse, ...] = field(default=(), repr=False)  # to mark stored on commit


@dataclass(frozen=True, slots=True)
class _SchemaPlan:
    """A schema's fields as the hot path wants them: public names, and per protected field
    (name, tier, associated-data label, index domain, index column)."""

    schema: SchemaProtection
    public: tuple[str, ...]
    protected: tuple[tuple[str, Tier, bytes, str | None, str | None], ...]
    known: frozenset[str]

    def check(self, payload: Mapping[str, Any]) -> None:
        """Raise ``TierCatalogError`` for a field the catalog gives no tier."""
        if not self.known.issuperset(payload):
            self.schema.field(min(set(payload) - self.known))


class _BatchState:
    """Per-batch memo: the clock reading, keys already chosen, indexes already computed."""

    __slots__ = ("now", "keys", "used", "indexes")

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.keys: dict[bytes, dict[Tier, _InUse]] = {}
        self.used: dict[_InUse, None] = {}
        self.indexes: dict[tuple[str, object], bytes] = {}


class _InUse:
    """A key this process minted, with its record, use count and whether it is stored."""

    __slots__ = ("key", "record", "uses", "minted_at", "used_at", "stored", "wrapper")

    def __init__(self, key: DataKey | WrappingKey, record: Any, minted_at: datetime,
                 wrapper: _InUse | None = None) -> None:
        self.key = key
        self.record = record
        self.uses = 0
        self.minted_at = minted_at
        self.used_at = minted_at
        self.stored = False
        self.wrapper = wrapper  # a data key's wrapping key


def mint_wrapping_key(keyring: Keyring, tier: Tier) -> tuple[WrappingKey, WrappingKeyRecord]:
    """A fresh wrapping key of ``tier`` and its record, sealed to the tier's current version.

    Only the tier's public key is needed: writers and ``attest keys rotate-kek`` both mint here.
    """
    key = WrappingKey.generate(tier)
    context = envelope.wrapping_key_context(key.key_id, tier)
    sealed = keyring.seal_to_tier(tier, key.secret_for_sealing(), context)
    return key, WrappingKeyRecord(key.key_id, tier, envelope.sealed_version(sealed), sealed)


def subject_reference(keyring: Keyring, domain: str, value: object) -> bytes:
    """How a subject is named in key records: its blind index in its identifier domain."""
    return blind_index(keyring.blind_index_key(domain), value)


class FieldProtector:
    """Seals verified events for storage. Thread-safe: agents share one per worker process."""

    def __init__(
        self,
        keyring: Keyring,
        catalog: ProtectionCatalog | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_key_uses: int = MAX_KEY_USES,
        data_key_max_age: timedelta = DATA_KEY_MAX_AGE,
        wrapping_key_max_age: timedelta = WRAPPING_KEY_MAX_AGE,
        cache_size: int = DATA_KEY_CACHE,
        data_key_idle: timedelta = DATA_KEY_IDLE,
        reload: Callable[[], Keyring] | None = None,
        reload_every: timedelta = KEYRING_REFRESH,
    ) -> None:
        """``reload`` re-reads the keyring (default: the keyring's own ``reopen``, which the
        worker's file keyring has): it is called every ``reload_every`` and whenever the
        shredding epoch moves (a forget or a rotation), so a rotated tier key is used from the
        next wrapping key on, without a restart."""
        self._keyring = keyring
        self._reload = reload if reload is not None else getattr(keyring, "reopen", None)
        self._reload_every = reload_every
        self._loaded_at: datetime | None = None
        self._catalog = catalog or protection_catalog()
        self._clock = clock
        self._max_uses = max_key_uses
        self._data_key_max_age = data_key_max_age
        self._wrapping_key_max_age = wrapping_key_max_age
        self._cache_size = cache_size
        self._data_key_idle = data_key_idle
        self._lock = threading.Lock()
        self._data_keys: OrderedDict[tuple[bytes, Tier], _InUse] = OrderedDict()
        self._wrapping_keys: dict[Tier, _InUse] = {}
        self._plans: dict[str, _SchemaPlan] = {}
        self._epoch: int | None = None
        # Fail at start, not on the first event: every tier sealable, every domain keyed.
        for tier in PROTECTED_TIERS:
            keyring.current_version(tier)
        self._index_keys = {d: keyring.blind_index_key(d) for d in self._catalog.domains}

    def __repr__(self) -> str:
        return f"FieldProtector(keyring={self._keyring!r}, data_keys_in_use={len(self._data_keys)})"

    @property
    def catalog(self) -> ProtectionCatalog:
        return self._catalog

    # -- sealing -----------------------------------------------------------------------------

    def seal_batch(self, events: Iterable[EventFields], shredding_epoch: int = 0) -> SealedBatch:
        """Seal every event; the batch names the key records that must be stored with it.

        ``shredding_epoch`` is the database's count of ``attest forget`` runs, read under a
        share lock in the storing transaction: when it moved, every cached data key is dropped
        (any of them may have been destroyed), and fresh ones are minted.
        """
        with self._lock:
            now = self._clock()
            moved = shredding_epoch != self._epoch
            if moved:
                # A forget may have destroyed any cached data key, and a rotation may have
                # deleted any stored wrapping key: both caches start again.
                self._data_keys.clear()
                self._wrapping_keys.clear()
                self._epoch = shredding_epoch
            self._maybe_reload(now, moved)
            self._drop_idle(now)
            batch = _BatchState(now)
            sealed = [self._seal(e.typ, e.event_id, e.payload, batch) for e in events]
            used = list(batch.used)
            pending_data = [u for u in used if not u.stored]
            pending_wrapping = list({id(w): w for u in pending_data
                                     if (w := u.wrapper) is not None and not w.stored}.values())
            return SealedBatch(
                events=sealed,
                wrapping_keys=[w.record for w in pending_wrapping],
                data_keys=[u.record for u in pending_data],
                used_data_keys=frozenset(u.key.key_id for u in used),
                _pending=(*pending_data, *pending_wrapping),
            )

    def _maybe_reload(self, now: datetime, epoch_moved: bool) -> None:
        """Re-read the keyring when due; a tier whose current version changed gets a new
        wrapping key at its next use. A keyring that cannot be read keeps the one in memory
        (logged): sealing to an older version is still readable, stopping the worker is not."""
        if self._reload is None:
            return
        if not epoch_moved and self._loaded_at is not None \
                and now - self._loaded_at < self._reload_every:
            return
        self._loaded_at = now
        try:
            fresh = self._reload()
            for tier in PROTECTED_TIERS:
                fresh.current_version(tier)
        except KeyringError as exc:
            log.warning("keeping the keyring in memory: it could not be reloaded (%s)", exc)
            return
        for tier, entry in list(self._wrapping_keys.items()):
            if entry.record.kek_version != fresh.current_version(tier):
                del self._wrapping_keys[tier]
        self._keyring = fresh

    def public_payload(self, typ: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The fields of ``payload`` that are stored in clear (what ``seal_batch`` leaves public)."""
        plan = self._plan(typ)
        plan.check(payload)
        return {n: payload[n] for n in plan.public if n in payload}

    def _plan(self, typ: str) -> _SchemaPlan:
        plan = self._plans.get(typ)
        if plan is None:
            schema = self._catalog.schema(typ)
            plan = self._plans[typ] = _SchemaPlan(
                schema=schema,
                public=tuple(f.name for f in schema.fields.values() if not f.protected),
                protected=tuple(
                    (f.name, f.tier, envelope.column_label(schema.table, f.name), f.blind_index,
                     f.index_column)
                    for f in schema.protected_fields),
                known=frozenset(schema.fields),
            )
        return plan

    def _index(self, domain: str, value: object, batch: _BatchState) -> bytes:
        digest = batch.indexes.get((domain, value))
        if digest is None:
            digest = batch.indexes[(domain, value)] = blind_index(self._index_keys[domain], value)
        return digest

    def _seal(
        self, typ: str, event_id: str, payload: Mapping[str, Any], batch: _BatchState
    ) -> SealedEvent:
        plan = self._plan(typ)
        plan.check(payload)  # a field without a tier is refused, never stored
        schema = plan.schema
        subject_ref = self._index(schema.subject_domain, payload[schema.subject_field], batch)
        keys = batch.keys.get(subject_ref)  # this subject's data keys in this batch, by tier
        if keys is None:
            keys = batch.keys[subject_ref] = {}
        max_uses = self._max_uses
        to_seal: list[tuple[DataKey, bytes, bytes]] = []
        names: list[str] = []
        indexes: dict[str, bytes] = {}
        for name, tier, label, domain, index_column in plan.protected:
            value = payload.get(name)
            if value is None:
                continue
            entry = keys.get(tier)
            if entry is None or entry.uses >= max_uses:
                entry = keys[tier] = self._data_key(schema, subject_ref, tier, batch.now)
                batch.used[entry] = None
            entry.uses += 1
            to_seal.append((entry.key, label, _encode(value)))  # type: ignore[arg-type]
            names.append(name)
            if domain:
                indexes[index_column] = self._index(domain, value, batch)  # type: ignore[index]
        department = str(payload[schema.department_field])
        sealed = envelope.seal_labelled(event_id, to_seal, envelope.field_scope(typ, department))
        return SealedEvent(event_id, typ, schema.table, department,
                           {n: payload[n] for n in plan.public if n in payload},
                           dict(zip(names, sealed, strict=True)), indexes)

    def _drop_idle(self, now: datetime) -> None:
        """Forget data keys unused for ``data_key_idle``: least recently used first, so this
        stops at the first key still in use."""
        keys = self._data_keys
        while keys:
            slot, entry = next(iter(keys.items()))
            if now - entry.used_at < self._data_key_idle:
                return
            del keys[slot]

    def _fresh(self, entry: _InUse, max_age: timedelta, now: datetime) -> bool:
        return entry.uses < self._max_uses and now - entry.minted_at < max_age

    def _wrapping_key(self, tier: Tier, now: datetime) -> _InUse:
        entry = self._wrapping_keys.get(tier)
        if entry is not None and self._fresh(entry, self._wrapping_key_max_age, now):
            return entry
        key, record = mint_wrapping_key(self._keyring, tier)
        entry = self._wrapping_keys[tier] = _InUse(key, record, now)
        return entry

    def _data_key(
        self, schema: SchemaProtection, subject_ref: bytes, tier: Tier, now: datetime
    ) -> _InUse:
        slot = (subject_ref, tier)
        entry = self._data_keys.get(slot)
        if entry is not None and self._fresh(entry, self._data_key_max_age, now):
            self._data_keys.move_to_end(slot)
            entry.used_at = now
            return entry
        wrapper = self._wrapping_key(tier, now)
        wrapper.uses += 1
        wrapping_key = wrapper.key
        if not isinstance(wrapping_key, WrappingKey):
            raise TypeError("a data key is wrapped by a WrappingKey")
        key = DataKey.generate(tier)
        record = DataKeyRecord(
            key_id=key.key_id, tier=tier, subject_domain=schema.subject_domain,
            subject_ref=subject_ref, wrapping_key_id=wrapping_key.key_id,
            wrapped=envelope.wrap_data_key(wrapping_key, key, subject_ref),
        )
        entry = self._data_keys[slot] = _InUse(key, record, now, wrapper)
        self._data_keys.move_to_end(slot)  # a replaced key is the newest, for _drop_idle
        while len(self._data_keys) > self._cache_size:
            self._data_keys.popitem(last=False)
        return entry

    # -- feedback from storage ------------------------------------------------------------------

    def confirm_stored(self, batch: SealedBatch) -> None:
        """The batch committed: its key records are durable and need not be sent again.

        A stored data key's record and wrapper are dropped: only an unstored key sends them,
        and they were two thirds of a cached key's memory.
        """
        with self._lock:
            for entry in batch._pending:
                entry.stored = True
                if isinstance(entry.key, DataKey):
                    entry.record = entry.wrapper = None


def writer_protector(
    state_dir: Path, environ: Mapping[str, str], refresh_s: float | None = None
) -> FieldProtector:
    """The worker's protector: public tier keys and index keys only, no private tier key.

    Keys come from the environment when it carries any ``ATTEST_KEK_*`` variable, else from
    ``worker-keyring.json`` in ``state_dir``. A keyring holding any private tier key is refused
    (``KeyringError``): the worker seals, and must be unable to open, what it stores.
    The file is re-read every ``refresh_s`` seconds (default ``KEYRING_REFRESH``) and after
    every rotation or forget, so a rotated tier key reaches a running worker; the environment
    cannot change under a running process, so keys from there are read once.
    """
    every = KEYRING_REFRESH if refresh_s is None else timedelta(seconds=refresh_s)
    return FieldProtector(open_writer_keyring(state_dir, environ), reload_every=every)
