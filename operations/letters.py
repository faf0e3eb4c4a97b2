"""Dead letters as operators count them: each rejected message once, filtered, by reason.

The topic may hold one rejection twice (a worker that crashed after dead-lettering and
before committing rejects the redelivered message again). ``StoredLetter.identity`` (source
position plus the SHA-256 of the bytes) names one rejected message; everything here counts
identities, not topic entries.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka import Message

from config.settings import Settings
from operations.broker_reads import BrokerReader
from operations.errors import UnknownTopic
from operations.selection import PartitionRange
from streams.dead_letters import StoredLetter
from streams.topics import DEAD_LETTER


@dataclass(frozen=True)
class LetterFilter:
    """``attest dlq list/retry`` filters; an unset field lets everything through."""

    reasons: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    source: str | None = None

    def admits(self, letter: StoredLetter) -> bool:
        if self.reasons and letter.reason not in self.reasons:
            return False
        at = letter.rejected_at
        if self.since is not None and (at is None or at < self.since):
            return False
        if self.until is not None and (at is None or at > self.until):
            return False
        return self.source is None or matches_source(letter, self.source)


def claimed_payload(value: bytes) -> dict[str, object]:
    """The JSON payload a compact JWS claims, unverified (for filtering and display only)."""
    parts = value.split(b".")
    if len(parts) != 3 or len(parts[1]) > 4 * 65536:
        return {}
    try:
        decoded = json.loads(base64.urlsafe_b64decode(parts[1] + b"=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError, RecursionError):  # a dead letter may be any bytes
        return {}
    return decoded if isinstance(decoded, dict) else {}




def matches_source(letter: StoredLetter, source: str) -> bool:
    """``--source`` names a producing system (the claimed payload ``source``) or a topic.

    A topic may be given in full (``attest.transactions``) or by its suffix (``transactions``).
    """
    topic = letter.source_topic or ""
    if source == topic or (topic.endswith(source) and topic[: -len(source)].endswith(".")):
        return True
    return claimed_payload(letter.value).get("source") == source


@dataclass
class LetterSummary:
    """Unique rejected messages (oldest letter of each), with counts."""

    unique: list[StoredLetter] = field(default_factory=list)
    by_reason: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0


def summarize(letters: Iterable[StoredLetter], letter_filter: LetterFilter | None = None) -> LetterSummary:
    """Drop repeated rejections of one message, then apply the filter and count by reason."""
    seen: set[tuple[str | None, int | None, int | None, str]] = set()
    summary = LetterSummary()
    for letter in letters:
        if letter.identity in seen:
            summary.duplicates += 1
            continue
        seen.add(letter.identity)
        if letter_filter is None or letter_filter.admits(letter):
            summary.unique.append(letter)
            summary.by_reason[letter.reason] += 1
    return summary


def stored_letter(msg: Message) -> StoredLetter:
    """A dead-letter topic message as a ``StoredLetter`` (headers decoded, never trusted)."""
    headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (msg.headers() or [])}
    return StoredLetter(msg.partition(), msg.offset(), msg.key(), msg.value() or b"", headers)


def letter_at(settings: Settings, partition: int, offset: int) -> StoredLetter | None:
    """The dead letter at ``partition:offset``, or None when the topic holds none there.

    One position, read directly (no scan of the topic): the access service answers one
    ``dead_letters.payload`` request with it. ``BrokerUnavailable`` when the broker is down.
    """
    topic = DEAD_LETTER.name(settings)
    with BrokerReader(settings) as reader:
        try:
            if partition not in reader.partitions(topic):
                return None
        except UnknownTopic:
            return None
        low, end = reader.watermarks(topic, [partition])[partition]
        if not low <= offset < end:
            return None
        for msg in reader.read(topic, [PartitionRange(partition, offset, offset + 1)]):
            return stored_letter(msg)
    return None
