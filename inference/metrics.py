"""Prometheus metrics of the model pool, on one module-level registry.

The metrics are created once per process (at import), not per pool: a process has one pool,
and tests that build many pools must not hit "Duplicated timeseries". They live on their own
``REGISTRY`` so they never collide with metrics of other packages; ``metrics_text()`` gives
the exposition text for the worker's web endpoint.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)

BATCH_SIZE = Histogram(
    "attest_inference_batch_size",
    "Texts per model call.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "attest_inference_queue_wait_seconds",
    "Time from a request's admission to the start of its first model call, by lane.",
    ["lane"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
INFERENCE_TIME = Histogram(
    "attest_inference_batch_seconds",
    "Wall time of one model call (tokenize + forward + pool), in the worker thread.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
REQUESTS = Counter(
    "attest_inference_requests_total", "embed() calls, by lane.", ["lane"], registry=REGISTRY
)
CACHE_HITS = Counter(
    "attest_inference_cache_hits_total", "Texts answered from the cache.", registry=REGISTRY
)
CACHE_MISSES = Counter(
    "attest_inference_cache_misses_total", "Texts not found in the cache.", registry=REGISTRY
)
REUSED = Counter(
    "attest_inference_reused_total",
    "Cache misses answered without the model: a twin in the same batch, or cached while queued.",
    registry=REGISTRY,
)
TIMEOUTS = Counter(
    "attest_inference_timeouts_total", "Requests that raised InferenceTimeout.", registry=REGISTRY
)
ERRORS = Counter(
    "attest_inference_errors_total", "Model calls that raised.", registry=REGISTRY
)
QUEUE_DEPTH = Gauge(
    "attest_inference_queue_texts", "Texts admitted and waiting for a model call.", registry=REGISTRY
)
WAITING_CALLERS = Gauge(
    "attest_inference_waiting_callers",
    "Requests held back by backpressure (queue full).",
    registry=REGISTRY,
)


@dataclass
class PoolStats:
    """Counters of one pool; each ``count_*`` also feeds the process-wide Prometheus metrics."""

    requests: int = 0
    batches: int = 0
    texts_encoded: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    reused: int = 0  # cache misses answered at batch time (twin in the batch, or cached meanwhile)
    timeouts: int = 0
    errors: int = 0
    recent_batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1024))

    def count_lookups(self, hits: int, misses: int) -> None:
        self.cache_hits += hits
        self.cache_misses += misses
        CACHE_HITS.inc(hits)
        CACHE_MISSES.inc(misses)

    def count_reused(self, texts: int) -> None:
        self.reused += texts
        REUSED.inc(texts)

    def count_batch(self, size: int, seconds: float) -> None:
        self.batches += 1
        self.texts_encoded += size
        self.recent_batch_sizes.append(size)
        BATCH_SIZE.observe(size)
        INFERENCE_TIME.observe(seconds)

    @property
    def hit_rate(self) -> float:
        looked_up = self.cache_hits + self.cache_misses
        return self.cache_hits / looked_up if looked_up else 0.0


CONTENT_TYPE = CONTENT_TYPE_LATEST


def metrics_text() -> str:
    """Prometheus exposition text of every model-pool metric (``generate_latest``).

    Serve it with ``CONTENT_TYPE`` as the response's content type.
    """
    return generate_latest(REGISTRY).decode("utf-8")
