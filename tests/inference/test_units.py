"""Pure pieces without a model: the vector math, the cache, prototypes, device rules, lanes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from inference.cache import EmbeddingCache, content_key
from inference.encoder import resolve_device
from inference.errors import ModelLoadError
from inference.lanes import LaneQueue, Priority, Request
from inference.tasks import DOCUMENT_TYPE, TRANSACTION_CATEGORY, load_prototypes, validate_prototypes
from inference.vectors import centroids, cosine, cosine_matrix, l2_normalize, mean_pool, nearest
from scenarios.finance import MEMOS


def test_l2_normalize_gives_unit_rows_and_keeps_zero_rows_finite() -> None:
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_mean_pool_ignores_padding() -> None:
    hidden = np.array([[[1.0, 1.0], [3.0, 5.0], [100.0, 100.0]]])
    mask = np.array([[1, 1, 0]])
    np.testing.assert_allclose(mean_pool(hidden, mask), [[2.0, 3.0]])


def test_cosine_and_matrix() -> None:
    assert cosine(np.array([1.0, 0.0]), np.array([2.0, 0.0])) == pytest.approx(1.0)
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 5.0])) == pytest.approx(0.0)
    assert cosine(np.array([1.0, 0.0]), np.array([-1.0, 0.0])) == pytest.approx(-1.0)
    assert cosine(np.zeros(2), np.array([1.0, 0.0])) == 0.0
    matrix = cosine_matrix(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 1.0]]))
    np.testing.assert_allclose(matrix, [[2**-0.5], [2**-0.5]], rtol=1e-6)


def test_centroids_weigh_examples_equally_and_nearest_picks_the_closest() -> None:
    labels, matrix = centroids({"x": np.array([[10.0, 0.0], [1.0, 0.0]]), "y": np.array([[0.0, 1.0]])})
    assert labels == ["x", "y"]
    np.testing.assert_allclose(matrix, [[1.0, 0.0], [0.0, 1.0]])
    result = nearest(np.array([[0.9, 0.1], [0.2, 0.8]]), labels, matrix)
    assert [label for label, _ in result] == ["x", "y"]
    assert result[0][1] == pytest.approx(cosine(np.array([0.9, 0.1]), np.array([1.0, 0.0])))
    with pytest.raises(ValueError, match="no example vectors"):
        centroids({"x": np.empty((0, 2))})


def test_cache_is_a_bounded_lru_of_read_only_vectors() -> None:
    cache = EmbeddingCache(2)
    a, b, c = content_key("a"), content_key("b"), content_key("c")
    cache.put(a, np.ones(3))
    cache.put(b, np.zeros(3))
    assert cache.get(a) is not None  # a is now the most recently used
    cache.put(c, np.ones(3))
    assert cache.get(b) is None and len(cache) == 2
    vector = cache.get(a)
    assert vector is not None and not vector.flags.writeable
    assert content_key("a") == content_key("a") != content_key("a ")
    disabled = EmbeddingCache(0)
    disabled.put(a, np.ones(3))
    assert disabled.get(a) is None


def test_cache_lookup_fills_hits_and_groups_repeated_misses() -> None:
    cache = EmbeddingCache(10)
    cache.put(content_key("known"), np.full(2, 7.0))
    out = np.zeros((4, 2), dtype=np.float32)
    misses = cache.lookup(["new", "known", "new", "other"], out)
    assert list(misses.values()) == [[0, 2], [3]]
    np.testing.assert_array_equal(out[1], [7.0, 7.0])
    with pytest.raises(TypeError, match="not str"):
        cache.lookup([1], out)  # type: ignore[list-item]


def test_bundled_prototypes_cover_the_issue_labels() -> None:
    prototypes = load_prototypes()
    assert set(prototypes[DOCUMENT_TYPE]) == {
        "invoice", "receipt", "tax_return", "benefit_application", "identity_document"}
    assert {"salary", "rent", "utilities", "refund", "supplier_payment", "insurance", "fees",
            "other"} <= set(prototypes[TRANSACTION_CATEGORY])
    assert all(5 <= len(examples) <= 8 for labels in prototypes.values() for examples in labels.values())
    assert len(MEMOS) == 8  # the scenario memos the real-model tests map onto these labels


@pytest.mark.parametrize("bad", [{}, {"t": {"only": ["x"]}}, {"t": {"a": ["x"], "b": []}},
                                 {"t": {"a": ["x"], "b": [" "]}}, ["not", "a", "map"]])
def test_bad_prototypes_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        validate_prototypes(bad)


def test_device_and_precision_rules() -> None:
    assert resolve_device("auto", "fp32", cuda_available=False) == "cpu"
    assert resolve_device("auto", "fp32", cuda_available=True) == "cuda"
    assert resolve_device("cpu", "int8", cuda_available=True) == "cpu"
    assert resolve_device("auto", "fp16", cuda_available=True) == "cuda"
    with pytest.raises(ModelLoadError, match="int8 .*CPU only"):
        resolve_device("cuda", "int8", cuda_available=True)
    with pytest.raises(ModelLoadError, match="fp16 runs on a CUDA GPU only"):
        resolve_device("auto", "fp16", cuda_available=False)
    with pytest.raises(ModelLoadError, match="no CUDA device"):
        resolve_device("cuda", "fp32", cuda_available=False)
    with pytest.raises(ModelLoadError, match="unknown inference precision"):
        resolve_device("cpu", "bf16", cuda_available=False)


async def test_lane_queue_admission_is_bounded_but_never_blocks_an_oversize_request() -> None:
    loop = asyncio.get_running_loop()

    def request(n: int, priority: Priority = Priority.LIVE) -> Request:
        return Request([f"t{i}" for i in range(n)], [b""] * n, priority, loop.create_future())

    queue = LaneQueue(capacity=4)
    big = request(10)
    assert queue.submit(big) and queue.queued == 10  # empty queue: admitted despite its size
    small = request(1)
    assert not queue.submit(small) and queue.waiting == 1
    assert [(start, end) for _, start, end in queue.take(8)] == [(0, 8)]
    assert queue.queued == 3 and queue.waiting == 0  # the room made let the small one in
    late = request(2, Priority.BACKFILL)
    assert not queue.submit(late) and queue.waiting == 1
    queue.withdraw(small)  # a withdrawn request frees its room at once
    assert queue.queued == 4 and queue.waiting == 0
    assert [(r.priority, s, e) for r, s, e in queue.take(8)] == [
        (Priority.LIVE, 8, 10), (Priority.BACKFILL, 0, 2)]
    assert queue.queued == 0 and queue.oldest() is None
