"""A fake encoder for scheduler tests: deterministic vectors, recorded calls, a gate to block on.

The gate is a ``threading.Event`` because ``encode`` runs in the pool's worker thread: a test
holds the model "busy" for as long as it likes, queues requests behind it, then releases it.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Sequence

import numpy as np

from inference.vectors import l2_normalize

DIM = 8


def vector_for(text: str) -> np.ndarray:
    """The unit vector the fake encoder gives ``text`` (a pure function of the text)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return l2_normalize(np.random.default_rng(seed).standard_normal(DIM).astype(np.float32))


class FakeEncoder:
    version = "fake@000000000000"
    dim = DIM

    def __init__(self, blocked: bool = False, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.threads: set[str] = set()
        self.entered = threading.Event()  # set when a call has started (and may be blocked)
        self.gate = threading.Event()
        if not blocked:
            self.gate.set()
        self.fail_on = fail_on

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        if not self.gate.wait(timeout=10):
            raise RuntimeError("test gate was never released")
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError(f"cannot encode {self.fail_on!r}")
        return np.stack([vector_for(t) for t in texts])

    @property
    def texts_seen(self) -> list[str]:
        return [text for call in self.calls for text in call]

    async def wait_entered(self) -> None:
        """Wait (off the loop) until the worker thread is inside ``encode``."""
        assert await asyncio.to_thread(self.entered.wait, 10), "encoder was never called"


async def until(condition: Callable[[], bool], rounds: int = 2000) -> None:
    """Let the loop run until ``condition`` holds (bounded, so a broken test fails, not hangs)."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never became true")
