"""LogProbe on the real embedded broker: which positions the log holds, with which bytes."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from config.settings import Settings
from streams.admin import ensure_topics
from streams.log_probe import LogProbe
from streams.producer import OutgoingMessage, deliver
from streams.topics import DEAD_LETTER

pytestmark = pytest.mark.integration


def _topic(settings: Settings) -> str:
    """A fresh topic of this test's own (the declared topics under a new prefix)."""
    own = settings.model_copy(update={"topic_prefix": f"probe{uuid.uuid4().hex[:8]}."})
    ensure_topics(own)
    return DEAD_LETTER.name(own)  # any declared topic; partition 0 is used


def test_the_probe_tells_held_bytes_from_other_bytes_and_from_positions_past_the_end(
    stack_settings: Settings,
) -> None:
    topic = _topic(stack_settings)
    values = [f"message {i}".encode() for i in range(25)]
    landed = deliver(stack_settings, topic, [OutgoingMessage(b"k", v) for v in values])
    (p,) = {d.partition for d in landed}  # one key: one partition
    at = {d.offset: values[d.index] for d in landed}
    assert sorted(at) == list(range(25))
    probe = LogProbe(stack_settings)
    try:
        digest = {offset: hashlib.sha256(v).digest() for offset, v in at.items()}
        assert probe.holds(topic, p, 3, digest[3]) is True
        assert probe.holds(topic, p, 24, digest[24]) is True  # inside the last record batch
        assert probe.holds(topic, p, 3, digest[4]) is False  # other bytes at that position
        assert probe.holds(topic, p, 25, digest[0]) is False  # the log ends at 24
        assert probe.holds(topic, p, 400, digest[0]) is False
    finally:
        probe.close()


def test_an_empty_partition_holds_nothing(stack_settings: Settings) -> None:
    topic = _topic(stack_settings)
    probe = LogProbe(stack_settings)
    try:
        assert probe.holds(topic, 0, 7, b"\0" * 32) is False
    finally:
        probe.close()


def test_the_span_of_a_partition_is_read_to_its_real_end(stack_settings: Settings) -> None:
    # The embedded broker reports the last record batch's base offset plus one as the high
    # watermark (a batch of 25 looks like one message); the span reads on to the real end.
    topic = _topic(stack_settings)
    landed = deliver(stack_settings, topic,
                     [OutgoingMessage(b"k", f"m{i}".encode()) for i in range(25)])
    (p,) = {d.partition for d in landed}
    probe = LogProbe(stack_settings)
    try:
        assert probe.span(topic, p) == (0, 25)
        assert probe.span(topic, 1 - p) == (0, 0)  # the other partition holds nothing
    finally:
        probe.close()
