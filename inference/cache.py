"""Content-hash LRU cache of embeddings.

The key is the SHA-256 of the UTF-8 text, so the cache holds no text (memos can be personal
data) and a key is the same in every process. Cached arrays are read-only: every caller
gets the same numbers and none can change them for the next one. One pool owns one cache
and touches it only from the event loop, so it needs no lock.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np


def content_key(text: str) -> bytes:
    """SHA-256 digest of the text's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).digest()


class EmbeddingCache:
    """Bounded LRU map from content key to a read-only vector; size 0 disables it."""

    def __init__(self, max_size: int) -> None:
        if max_size < 0:
            raise ValueError("cache size must be >= 0")
        self.max_size = max_size
        self._items: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: bytes) -> np.ndarray | None:
        """The cached vector (marked most recently used), or None."""
        vector = self._items.get(key)
        if vector is not None:
            self._items.move_to_end(key)
        return vector

    def lookup(self, texts: list[str], out: np.ndarray) -> dict[bytes, list[int]]:
        """Copy cached vectors into ``out`` rows; return the misses as key -> row positions.

        A text repeated within one call appears once in the result, so it is computed once.
        """
        misses: dict[bytes, list[int]] = {}
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is {type(text).__name__}, not str")
            key = content_key(text)
            cached = self.get(key)
            if cached is not None:
                out[i] = cached
            else:
                misses.setdefault(key, []).append(i)
        return misses

    def partition(
        self, keys: list[bytes], texts: list[str]
    ) -> tuple[dict[bytes, np.ndarray], dict[bytes, str]]:
        """For a batch: (key -> cached vector, key -> text still to compute), each key once."""
        rows: dict[bytes, np.ndarray] = {}
        todo: dict[bytes, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in rows and key not in todo:
                cached = self.get(key)
                if cached is None:
                    todo[key] = text
                else:
                    rows[key] = cached
        return rows, todo

    def put(self, key: bytes, vector: np.ndarray) -> None:
        """Store a read-only copy; evict the least recently used beyond ``max_size``."""
        if self.max_size == 0:
            return
        stored = np.array(vector, dtype=np.float32, copy=True)
        stored.flags.writeable = False
        self._items[key] = stored
        self._items.move_to_end(key)
        while len(self._items) > self.max_size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()
