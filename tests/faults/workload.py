"""The known set of messages a fault case sends, each with the fate the product promises.

Every message is planned with its fate before it is sent: stored (a good event) or
dead-lettered with a reason. After sending, each also knows the partition and offset the
broker gave it, so the checks can find it by position, exactly as the product records it.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench.ledger import ANY_REASON, Planned, send_planned
from config.settings import Settings
from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from security.keyfiles import SigningKey, generate_key
from storage import keys as registry
from streams.producer import sign_payload, tamper
from streams.topics import TRANSACTIONS


@dataclass
class Signers:
    """The registered key good events are signed with, and one the registry never saw."""

    source: str
    good: SigningKey
    stranger: SigningKey

    @classmethod
    def register(cls, database_url: str, source: str) -> Signers:
        good, stranger = generate_key(source), generate_key(source)
        registry.add_key(database_url, good.kid, good.source, good.alg, good.public_jwk)
        return cls(source, good, stranger)


@dataclass
class Workload:
    """Builds batches of planned messages: good events with bad ones interleaved."""

    settings: Settings
    signers: Signers
    seed: int
    sent: list[Planned] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._round = 0

    def build(self, good: int, bad: int) -> list[Planned]:
        """``good`` valid payments and ``bad`` rejections of four kinds, shuffled together."""
        self._round += 1
        topic = TRANSACTIONS.name(self.settings)
        payloads = transaction_payloads(good + bad, self.signers.source,
                                        seed=self.seed * 1000 + self._round,
                                        now=datetime.now(UTC))
        planned: list[Planned] = []
        for payload in payloads[:good]:
            token = sign_payload(self.signers.good, payload, TRANSACTION_V1)
            planned.append(Planned(topic, payload["reference"].encode(), token, None,
                                   payload["event_id"]))
        originals = list(planned)
        for i, payload in enumerate(payloads[good:]):
            kind = i % 4
            key = payload["reference"].encode()
            if kind == 0:
                value = tamper(sign_payload(self.signers.good, payload, TRANSACTION_V1))
                planned.append(Planned(topic, key, value, "bad_signature", payload["event_id"]))
            elif kind == 1:
                value = f"not a JWS #{self._round}-{i}".encode()
                planned.append(Planned(topic, key, value, "malformed"))
            elif kind == 2:
                value = sign_payload(self.signers.stranger, payload, TRANSACTION_V1)
                planned.append(Planned(topic, key, value, "unknown_key", payload["event_id"]))
            else:
                planned.append(self._replay_of(originals, i))
        # Shuffle, but a replay must come after its original (same key, same partition,
        # later offset): move each replay behind its original when the shuffle put it first.
        self._rng.shuffle(planned)
        return _replays_last(planned)

    def _replay_of(self, originals: list[Planned], i: int) -> Planned:
        if not originals:
            return Planned(TRANSACTIONS.name(self.settings), b"x",
                           f"not a JWS either #{self._round}-{i}".encode(), "malformed")
        original = originals[i % len(originals)]
        return Planned(original.topic, original.key, original.value, "replayed", original.event_id)

    def poison(self) -> list[Planned]:
        """Validly signed events no database column can hold: U+0000 in a public and in an
        encrypted field, and a lone surrogate (escaped JSON, as some producers write it)."""
        topic = TRANSACTIONS.name(self.settings)
        payloads = transaction_payloads(3, self.signers.source, seed=self.seed + 7,
                                        now=datetime.now(UTC))
        payloads[0]["currency"] = "E\u0000R"
        payloads[1]["memo"] = "poison \u0000 memo"
        payloads[2]["counterparty"] = "\ud83d lone surrogate"
        out = []
        for payload in payloads:
            body = json.dumps(payload, separators=(",", ":")).encode("ascii")
            token = self.signers.good.sign(body, TRANSACTION_V1)
            out.append(Planned(topic, b"poison", token, ANY_REASON, payload["event_id"]))
        return out

    def send(self, planned: list[Planned]) -> list[Planned]:
        """Send in order and record the position each landed at (idempotent producer)."""
        send_planned(self.settings, planned)
        self.sent.extend(planned)
        return planned


def _replays_last(planned: list[Planned]) -> list[Planned]:
    out: list[Planned] = []
    waiting: dict[bytes, list[Planned]] = {}
    seen: set[bytes] = set()
    for p in planned:
        if p.reason == "replayed" and p.value not in seen:
            waiting.setdefault(p.value, []).append(p)
            continue
        out.append(p)
        if p.reason is None:
            seen.add(p.value)
            out.extend(waiting.pop(p.value, []))
    return out + [p for group in waiting.values() for p in group]


def describe(planned: list[Planned]) -> str:
    counts: dict[str, int] = {}
    for p in planned:
        counts[p.reason or "stored"] = counts.get(p.reason or "stored", 0) + 1
    return json.dumps(counts, sort_keys=True)
