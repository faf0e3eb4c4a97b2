"""The model pool's scheduler: micro-batching, priority lanes, backpressure, timeouts, cache.

One pool per worker process; every agent awaits ``pool.embed``. Requests from concurrent
callers are merged into batches of at most ``max_batch`` texts; a batch leaves as soon as it
is full or its oldest text has waited ``max_wait_ms``. Lanes are strict: a batch is filled
from LIVE first, then REPLAY, then BACKFILL. Admission is bounded by ``queue_size`` queued
texts: beyond it callers wait (in lane order), nothing is dropped. The model runs in one
dedicated thread, so the event loop keeps serving Kafka and Postgres while torch computes.
All bookkeeping happens on the event loop thread, so it needs no locks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from inference import metrics
from inference.cache import EmbeddingCache
from inference.encoder import WARMUP_TEXT, EncoderLike
from inference.errors import InferenceError, InferenceTimeout, ModelLoadError, PoolClosed
from inference.lanes import LaneQueue, Priority, Request, Segment
from inference.metrics import PoolStats

if TYPE_CHECKING:
    from config.settings import Settings

logger = logging.getLogger(__name__)

class ModelPool:
    """Shared, batched, prioritized access to one model. Start it once, close it once."""

    def __init__(
        self,
        encoder: EncoderLike | Callable[[], EncoderLike],
        *,
        max_batch: int = 64,
        max_wait_ms: float = 5.0,
        queue_size: int = 4096,
        timeout_s: float = 30.0,
        cache_size: int = 20_000,
        warmup: bool = True,
    ) -> None:
        """``encoder`` is a loaded encoder, or a callable that loads one (run in the worker thread)."""
        if max_batch < 1 or queue_size < 1 or max_wait_ms < 0 or timeout_s <= 0:
            raise ValueError("need max_batch >= 1, queue_size >= 1, max_wait_ms >= 0, timeout_s > 0")
        self._source = encoder
        self._encoder: EncoderLike | None = None
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self.warmup = warmup
        self.cache = EmbeddingCache(cache_size)
        self.stats = PoolStats()
        self._queue = LaneQueue(queue_size)
        self._state = "new"  # new -> running -> closing -> closed
        self._arrived = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._scheduler: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, warmup: bool = True) -> ModelPool:
        """The pool the settings describe; the model itself loads in ``start()``."""
        from inference.encoder import Encoder  # torch loads with the model, not with the pool

        return cls(
            partial(Encoder.from_settings, settings),
            max_batch=settings.inference_max_batch,
            max_wait_ms=settings.inference_max_wait_ms,
            queue_size=settings.inference_queue_size,
            timeout_s=settings.inference_timeout_s,
            cache_size=settings.inference_cache_size,
            warmup=warmup,
        )

    # --- state ---------------------------------------------------------------------------
    @property
    def encoder(self) -> EncoderLike:
        if self._encoder is None:
            raise PoolClosed("the model pool has not been started")
        return self._encoder

    @property
    def model_version(self) -> str:
        """Model name and weights hash, e.g. ``all-MiniLM-L6-v2@53aa51172d14``."""
        return self.encoder.version

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def running(self) -> bool:
        return self._state == "running"

    @property
    def queued(self) -> int:
        """Texts admitted and waiting for a batch (bounded by ``queue_size``)."""
        return self._queue.queued

    @property
    def waiting(self) -> int:
        """Requests held back by backpressure."""
        return self._queue.waiting

    async def __aenter__(self) -> ModelPool:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Load the model in the worker thread (the loop stays free), warm it up, start batching."""
        if self._state != "new":
            raise InferenceError(f"the model pool cannot start: it is {self._state}")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attest-inference")
        try:
            self._encoder = await asyncio.get_running_loop().run_in_executor(self._executor, self._load)
        except BaseException:
            self._executor.shutdown(wait=False)
            raise
        self._state = "running"
        self._scheduler = asyncio.create_task(self._run(), name="attest-inference-scheduler")
        self._scheduler.add_done_callback(self._scheduler_done)

    def _scheduler_done(self, task: asyncio.Task[None]) -> None:
        """A scheduler that died of a bug must not leave its callers waiting for their timeouts."""
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("model pool scheduler failed", exc_info=exc)
            self._state = "closed"
            self._fail_all(InferenceError(f"the model pool's scheduler failed: {exc!r}"))

    def _load(self) -> EncoderLike:
        source = self._source
        encoder: EncoderLike = source if hasattr(source, "encode") else source()  # type: ignore[operator]
        if self.warmup:  # first calls allocate and pick kernels; pay that before live traffic
            try:
                encoder.encode([WARMUP_TEXT])
                encoder.encode([WARMUP_TEXT] * self.max_batch)
            except Exception as exc:  # noqa: BLE001
                raise ModelLoadError(f"the model failed its warm-up call: {exc}") from exc
        return encoder

    async def close(self) -> None:
        """Refuse new work, finish everything already queued, then stop the worker thread."""
        if self._state in ("new", "closed"):
            self._state = "closed"
            return
        self._state = "closing"
        self._arrived.set()
        assert self._scheduler is not None and self._executor is not None
        try:
            await asyncio.shield(self._scheduler)
        finally:
            if self._scheduler.done():
                self._state = "closed"
                self._fail_all(PoolClosed("the model pool closed before this request ran"))
        # Join the worker thread (off the loop): its exit also frees its OpenMP team, so a
        # later pool in this process does not run beside a lingering one (see docs).
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    # --- requests ------------------------------------------------------------------------
    async def embed(
        self, texts: Sequence[str], priority: Priority = Priority.LIVE, timeout_s: float | None = None
    ) -> np.ndarray:
        """Unit vectors for ``texts``, shape (len(texts), dim), float32, in input order.

        Waits (never drops) while the queue is full. Raises InferenceTimeout after
        ``timeout_s`` (default: the pool's), PoolClosed once ``close()`` has begun.
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of texts, not a single string")
        if self._state != "running":
            raise PoolClosed(f"the model pool is {self._state} and takes no new work")
        priority = Priority(priority)
        texts = list(texts)
        self.stats.requests += 1
        metrics.REQUESTS.labels(priority.name.lower()).inc()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        positions = self.cache.lookup(texts, out)
        misses = sum(len(p) for p in positions.values())
        self.stats.count_lookups(len(texts) - misses, misses)
        if not positions:
            return out
        keys = list(positions)
        request = Request(
            [texts[positions[k][0]] for k in keys], keys, priority,
            asyncio.get_running_loop().create_future(),
        )
        timeout = self.timeout_s if timeout_s is None else timeout_s
        if self._queue.submit(request):
            self._arrived.set()
        try:
            async with asyncio.timeout(timeout):
                vectors = await request.future
        except TimeoutError:
            self._withdraw(request)
            self.stats.timeouts += 1
            metrics.TIMEOUTS.inc()
            raise InferenceTimeout(
                f"inference took longer than {timeout:g}s for {len(texts)} text(s) in the "
                f"{priority.name.lower()} lane ({self._queue.queued} other text(s) queued); the request "
                "was withdrawn, nothing was dropped: keep the event and retry it"
            ) from None
        finally:
            self._withdraw(request)
        for key, row in zip(keys, vectors, strict=True):
            out[positions[key]] = row
        return out

    def _withdraw(self, request: Request) -> None:
        """Take a request's remaining texts off the queue; wake the scheduler if room let others in."""
        if self._queue.withdraw(request):
            self._arrived.set()

    def _fail_all(self, error: InferenceError) -> None:
        for request in self._queue.unfinished():
            request.fail(error)
            self._withdraw(request)

    # --- the scheduler -------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while (batch := await self._next_batch()) is not None:
            await self._run_batch(loop, batch)
            # Callers just answered usually send their next request at once; let them queue
            # it before the next batch is cut, or batches shrink under steady load.
            await asyncio.sleep(0)

    async def _next_batch(self) -> list[Segment] | None:
        """Wait for a full batch or for the oldest queued text to reach max wait; None: drained."""
        while True:
            oldest = self._queue.oldest()
            if oldest is None:
                if self._state != "running":
                    return None
                self._arrived.clear()
                await self._arrived.wait()
                continue
            delay = oldest + self.max_wait_s - time.monotonic()
            if self._queue.queued >= self.max_batch or self._state != "running" or delay <= 0:
                return self._queue.take(self.max_batch)
            self._arrived.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._arrived.wait()
            except TimeoutError:
                return self._queue.take(self.max_batch)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[Segment]) -> None:
        """Compute one batch; each request gets its rows, the cache gets every new vector."""
        keys = [key for request, start, end in batch for key in request.keys[start:end]]
        texts = [text for request, start, end in batch for text in request.texts[start:end]]
        try:
            vectors = await self._compute(loop, keys, texts)
        except Exception as exc:  # noqa: BLE001 - one failed batch fails its requests, not the pool
            self.stats.errors += 1
            metrics.ERRORS.inc()
            message = f"the model failed on a batch of {len(texts)} text(s): {type(exc).__name__}: {exc}"
            for request, _, _ in batch:
                request.fail(InferenceError(message))
                self._withdraw(request)
            return
        offset = 0
        for request, start, end in batch:
            rows = vectors[offset:offset + end - start]
            for key, row in zip(request.keys[start:end], rows, strict=True):
                self.cache.put(key, row)  # even for a request that timed out: the work is done
            request.deliver(start, end, rows)
            offset += end - start

    async def _compute(
        self, loop: asyncio.AbstractEventLoop, keys: list[bytes], texts: list[str]
    ) -> np.ndarray:
        """Vectors for a batch. With the cache on, a text whose twin is in the same batch or
        was computed while it queued is not sent to the model again."""
        if not self.cache.max_size:
            return await self._encode(loop, texts)
        rows, todo = self.cache.partition(keys, texts)
        if todo:
            rows.update(zip(todo, await self._encode(loop, list(todo.values())), strict=True))
        self.stats.count_reused(len(keys) - len(todo))
        return np.stack([rows[key] for key in keys])

    async def _encode(self, loop: asyncio.AbstractEventLoop, texts: list[str]) -> np.ndarray:
        """One model call, in the worker thread."""
        began = time.perf_counter()
        vectors = await loop.run_in_executor(self._executor, self.encoder.encode, texts)
        if vectors.shape != (len(texts), self.dim):
            raise InferenceError(f"encoder returned shape {vectors.shape} for {len(texts)} texts")
        self.stats.count_batch(len(texts), time.perf_counter() - began)
        return vectors
