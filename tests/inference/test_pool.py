"""The scheduler with a fake encoder: batching, lanes, backpressure, timeouts, cache, drain."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from inference import metrics
from inference.errors import InferenceError, InferenceTimeout, PoolClosed
from inference.pool import ModelPool, Priority
from tests.inference.fakes import FakeEncoder, until, vector_for


def make_pool(encoder: FakeEncoder, **options: object) -> ModelPool:
    settings: dict[str, object] = {"max_batch": 64, "max_wait_ms": 20.0, "queue_size": 1000,
                                   "timeout_s": 10.0, "cache_size": 100, "warmup": False}
    settings.update(options)
    return ModelPool(encoder, **settings)  # type: ignore[arg-type]


def expected(texts: list[str]) -> np.ndarray:
    return np.stack([vector_for(t) for t in texts])


async def test_concurrent_requests_are_merged_into_few_batches() -> None:
    encoder = FakeEncoder()
    async with make_pool(encoder) as pool:
        texts = [f"memo {i}" for i in range(20)]
        results = await asyncio.gather(*(pool.embed([t]) for t in texts))
    assert len(encoder.calls) < 20
    assert max(len(call) for call in encoder.calls) > 1
    assert sorted(encoder.texts_seen) == sorted(texts)
    for text, result in zip(texts, results, strict=True):
        np.testing.assert_array_equal(result, expected([text]))  # each caller gets its own row


async def test_large_request_is_split_into_max_batch_calls_and_reassembled() -> None:
    encoder = FakeEncoder()
    async with make_pool(encoder, max_batch=4) as pool:
        texts = [f"line {i}" for i in range(10)]
        result = await pool.embed(texts)
    assert [len(call) for call in encoder.calls] == [4, 4, 2]
    np.testing.assert_array_equal(result, expected(texts))


async def test_model_runs_in_the_dedicated_worker_thread_and_the_loop_stays_free() -> None:
    encoder = FakeEncoder(blocked=True)
    async with make_pool(encoder) as pool:
        request = asyncio.create_task(pool.embed(["slow"]))
        await encoder.wait_entered()
        ticks = 0
        for _ in range(50):  # the loop keeps running while the model is busy
            await asyncio.sleep(0)
            ticks += 1
        assert ticks == 50 and not request.done()
        encoder.gate.set()
        await request
    assert encoder.threads and all(name.startswith("attest-inference") for name in encoder.threads)
    assert threading.current_thread().name not in encoder.threads


async def test_live_lane_is_served_before_backfill_and_replay() -> None:
    encoder = FakeEncoder(blocked=True)
    done: list[str] = []

    async def call(text: str, priority: Priority) -> None:
        await pool.embed([text], priority)
        done.append(text)

    async with make_pool(encoder, max_batch=2) as pool:
        first = asyncio.create_task(pool.embed(["busy"]))
        await encoder.wait_entered()
        tasks = [asyncio.create_task(call(f"backfill {i}", Priority.BACKFILL)) for i in range(3)]
        tasks += [asyncio.create_task(call(f"replay {i}", Priority.REPLAY)) for i in range(2)]
        tasks += [asyncio.create_task(call(f"live {i}", Priority.LIVE)) for i in range(3)]
        await until(lambda: pool.queued == 8)
        encoder.gate.set()
        await asyncio.gather(first, *tasks)
    order = encoder.texts_seen[1:]
    assert order == ["live 0", "live 1", "live 2", "replay 0", "replay 1",
                     "backfill 0", "backfill 1", "backfill 2"]
    assert done.index("live 2") < done.index("replay 0") < done.index("backfill 0")


async def test_full_queue_makes_callers_wait_and_drops_nothing() -> None:
    encoder = FakeEncoder(blocked=True)
    async with make_pool(encoder, max_batch=2, queue_size=4) as pool:
        texts = [f"event {i}" for i in range(20)]
        tasks = [asyncio.create_task(pool.embed([t])) for t in texts]
        await encoder.wait_entered()
        await until(lambda: pool.waiting == 14)
        assert pool.queued == 4  # bounded: 2 in the model, 4 queued, the rest wait
        encoder.gate.set()
        results = await asyncio.gather(*tasks)
    assert all(size <= 2 for size in map(len, encoder.calls))
    assert sorted(encoder.texts_seen) == sorted(texts)
    np.testing.assert_array_equal(np.concatenate(results), expected(texts))


async def test_waiting_live_request_is_admitted_before_waiting_backfill() -> None:
    encoder = FakeEncoder(blocked=True)
    async with make_pool(encoder, max_batch=1, queue_size=1) as pool:
        first = asyncio.create_task(pool.embed(["busy"]))
        await encoder.wait_entered()
        backfill = [asyncio.create_task(pool.embed([f"bf {i}"], Priority.BACKFILL)) for i in range(3)]
        await until(lambda: pool.waiting == 2)
        live = asyncio.create_task(pool.embed(["live"], Priority.LIVE))
        await until(lambda: pool.waiting == 3)
        encoder.gate.set()
        await asyncio.gather(first, live, *backfill)
    assert encoder.texts_seen == ["busy", "bf 0", "live", "bf 1", "bf 2"]


async def test_timeout_raises_withdraws_the_request_and_the_pool_keeps_working() -> None:
    encoder = FakeEncoder(blocked=True)
    async with make_pool(encoder) as pool:
        busy = asyncio.create_task(pool.embed(["busy"]))
        await encoder.wait_entered()
        message = r"longer than 0\.05s .*\(0 other text\(s\) queued\).*keep the event and retry"
        with pytest.raises(InferenceTimeout, match=message):
            await pool.embed(["queued behind the busy model"], timeout_s=0.05)
        assert pool.queued == 0 and pool.stats.timeouts == 1
        encoder.gate.set()
        await busy
        np.testing.assert_array_equal(await pool.embed(["after"]), expected(["after"]))
    assert "queued behind the busy model" not in encoder.texts_seen


async def test_request_abandoned_inside_the_model_still_fills_the_cache() -> None:
    encoder = FakeEncoder(blocked=True)
    async with make_pool(encoder) as pool:
        abandoned = asyncio.create_task(pool.embed(["slow"]))
        await encoder.wait_entered()
        abandoned.cancel()  # what a timeout does to a request that is already in the model
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        encoder.gate.set()
        await until(lambda: pool.stats.batches == 1)
        np.testing.assert_array_equal(await pool.embed(["slow"]), expected(["slow"]))
    assert encoder.texts_seen == ["slow"]


async def test_cancelled_caller_is_withdrawn_from_the_queue() -> None:
    encoder = FakeEncoder(blocked=True)
    async with make_pool(encoder) as pool:
        busy = asyncio.create_task(pool.embed(["busy"]))
        await encoder.wait_entered()
        doomed = asyncio.create_task(pool.embed(["doomed", "too"]))
        await until(lambda: pool.queued == 2)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert pool.queued == 0
        encoder.gate.set()
        await busy
    assert encoder.texts_seen == ["busy"]


async def test_cache_returns_identical_vectors_and_counts_hits() -> None:
    encoder = FakeEncoder()
    hits_before = metrics.REGISTRY.get_sample_value("attest_inference_cache_hits_total") or 0.0
    async with make_pool(encoder) as pool:
        first = await pool.embed(["Northwind Traders", "rent March 2024"])
        second = await pool.embed(["rent March 2024", "Northwind Traders"])
        assert pool.stats.cache_hits == 2 and pool.stats.cache_misses == 2
    np.testing.assert_array_equal(second, first[::-1])
    assert len(encoder.calls) == 1
    assert metrics.REGISTRY.get_sample_value("attest_inference_cache_hits_total") == hits_before + 2
    second[0] = 0.0  # a caller's array is its own: changing it cannot poison the cache
    np.testing.assert_array_equal(first[1], expected(["rent March 2024"])[0])


async def test_twins_in_one_batch_are_computed_once() -> None:
    encoder = FakeEncoder(blocked=True)
    async with make_pool(encoder) as pool:
        busy = asyncio.create_task(pool.embed(["busy"]))
        await encoder.wait_entered()
        twins = [asyncio.create_task(pool.embed(["Contoso Ltd: rent March 2024"])) for _ in range(5)]
        await until(lambda: pool.queued == 5)
        encoder.gate.set()
        results = await asyncio.gather(busy, *twins)
        assert pool.stats.reused == 4
    assert encoder.calls == [["busy"], ["Contoso Ltd: rent March 2024"]]
    for result in results[2:]:
        np.testing.assert_array_equal(result, results[1])


async def test_a_text_computed_while_its_twin_queued_is_not_computed_again() -> None:
    encoder = FakeEncoder(blocked=True)
    async with make_pool(encoder) as pool:
        first = asyncio.create_task(pool.embed(["salary May 2024"]))
        await encoder.wait_entered()
        second = asyncio.create_task(pool.embed(["salary May 2024"]))  # a cache miss right now
        await until(lambda: pool.queued == 1)
        encoder.gate.set()
        a, b = await asyncio.gather(first, second)
        assert pool.stats.cache_misses == 2 and pool.stats.reused == 1
    assert encoder.calls == [["salary May 2024"]]
    np.testing.assert_array_equal(a, b)


async def test_repeated_text_in_one_request_is_computed_once_and_cache_can_be_disabled() -> None:
    encoder = FakeEncoder()
    async with make_pool(encoder, cache_size=0) as pool:
        result = await pool.embed(["same", "other", "same"])
        await pool.embed(["same"])
    assert encoder.calls == [["same", "other"], ["same"]]
    np.testing.assert_array_equal(result, expected(["same", "other", "same"]))


async def test_model_failure_fails_its_requests_only() -> None:
    encoder = FakeEncoder(fail_on="poison")
    async with make_pool(encoder) as pool:
        with pytest.raises(InferenceError, match="cannot encode 'poison'"):
            await pool.embed(["poison"])
        np.testing.assert_array_equal(await pool.embed(["fine"]), expected(["fine"]))
        assert pool.stats.errors == 1


async def test_a_scheduler_bug_fails_waiting_callers_instead_of_hanging_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = make_pool(FakeEncoder())
    await pool.start()

    def broken(limit: int) -> list[object]:
        raise RuntimeError("bug in batch cutting")

    monkeypatch.setattr(pool._queue, "take", broken)
    with pytest.raises(InferenceError, match="scheduler failed.*bug in batch cutting"):
        await pool.embed(["x"])
    with pytest.raises(PoolClosed):
        await pool.embed(["y"])
    await pool.close()


async def test_close_drains_queued_work_then_refuses_new_work() -> None:
    encoder = FakeEncoder(blocked=True)
    pool = make_pool(encoder, max_batch=2)
    await pool.start()
    texts = [f"queued {i}" for i in range(5)]
    tasks = [asyncio.create_task(pool.embed([t], Priority.BACKFILL)) for t in texts]
    await encoder.wait_entered()
    closing = asyncio.create_task(pool.close())
    await until(lambda: not pool.running)
    with pytest.raises(PoolClosed):
        await pool.embed(["too late"])
    encoder.gate.set()
    await closing
    results = await asyncio.gather(*tasks)
    np.testing.assert_array_equal(np.concatenate(results), expected(texts))
    with pytest.raises(PoolClosed):
        await pool.embed(["after close"])
    assert "too late" not in encoder.texts_seen
    await pool.close()  # closing twice is harmless


async def test_lifecycle_errors_are_clear() -> None:
    pool = make_pool(FakeEncoder())
    with pytest.raises(PoolClosed, match="not been started"):
        _ = pool.model_version
    with pytest.raises(PoolClosed):
        await pool.embed(["x"])
    with pytest.raises(TypeError, match="list of texts"):
        await pool.embed("a single string")  # type: ignore[arg-type]
    await pool.start()
    assert pool.model_version == "fake@000000000000"
    assert (await pool.embed([])).shape == (0, 8)
    await pool.close()
    with pytest.raises(InferenceError, match="cannot start"):
        await pool.start()


async def test_warmup_runs_before_the_pool_accepts_work_and_loader_runs_in_the_worker() -> None:
    encoder = FakeEncoder()
    loaded_in: list[str] = []

    def loader() -> FakeEncoder:
        loaded_in.append(threading.current_thread().name)
        return encoder

    async with make_pool(loader, warmup=True, max_batch=3) as pool:  # type: ignore[arg-type]
        assert [len(call) for call in encoder.calls] == [1, 3]
        await pool.embed(["x"])
    assert loaded_in[0].startswith("attest-inference")


async def test_several_pools_share_the_metrics_and_expose_them() -> None:
    for _ in range(3):
        async with make_pool(FakeEncoder()) as pool:
            await pool.embed(["metric"])
    text = metrics.metrics_text()
    for name in ("attest_inference_batch_size", "attest_inference_queue_wait_seconds",
                 "attest_inference_batch_seconds", "attest_inference_cache_hits_total",
                 "attest_inference_queue_texts"):
        assert name in text
