"""Workqueue semantics on a fake clock."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from controller.kube.clock import FakeClock
from controller.kube.ratelimit import BucketLimiter, ItemExponentialLimiter, default_controller_rate_limiter
from controller.kube.workqueue import ShutDown, WorkQueue


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


class Metrics:
    def __init__(self) -> None:
        self.adds = 0
        self.depths: list[int] = []
        self.latencies: list[float] = []
        self.durations: list[float] = []
        self.retries = 0

    def add(self, name: str) -> None:
        self.adds += 1

    def depth(self, name: str, n: int) -> None:
        self.depths.append(n)

    def queue_latency(self, name: str, seconds: float) -> None:
        self.latencies.append(seconds)

    def work_duration(self, name: str, seconds: float) -> None:
        self.durations.append(seconds)

    def retry(self, name: str) -> None:
        self.retries += 1


async def test_adds_of_a_waiting_item_are_deduplicated() -> None:
    q: WorkQueue[str] = WorkQueue(clock=FakeClock())
    for _ in range(3):
        q.add("a")
    q.add("b")
    assert len(q) == 2
    assert await q.get() == "a"
    assert await q.get() == "b"


async def test_item_is_never_processed_by_two_workers_and_readd_runs_exactly_once_more() -> None:
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue(clock=clock)
    active: set[str] = set()
    overlaps = 0
    runs: list[str] = []
    release = asyncio.Event()

    async def worker() -> None:
        nonlocal overlaps
        while True:
            try:
                item = await q.get()
            except ShutDown:
                return
            if item in active:
                overlaps += 1
            active.add(item)
            runs.append(item)
            if len(runs) == 1:
                await release.wait()
            await asyncio.sleep(0)
            active.discard(item)
            q.done(item)

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    q.add("k")
    await settle()
    assert runs == ["k"]
    # Three adds while "k" is being processed: not handed to the idle workers, and folded to one.
    q.add("k")
    q.add("k")
    q.add("k")
    await settle()
    assert runs == ["k"]
    assert len(q) == 0
    release.set()
    await settle()
    assert runs == ["k", "k"]
    await q.shutdown_with_drain()
    await asyncio.gather(*workers)
    assert overlaps == 0


async def test_add_after_waits_for_the_clock_and_earliest_request_wins() -> None:
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue(clock=clock)
    q.add_after("a", 10)
    q.add_after("a", 3)  # sooner: replaces the 10 s timer
    q.add_after("a", 20)  # later: ignored
    await settle()
    clock.advance(2.9)
    await settle()
    assert len(q) == 0
    clock.advance(0.2)
    await settle()
    assert len(q) == 1
    assert await q.get() == "a"
    q.done("a")
    clock.advance(30)
    await settle()
    assert len(q) == 0, "superseded timers must not fire"


def test_per_item_backoff_doubles_from_5ms_to_1000s_and_forget_resets() -> None:
    limiter = ItemExponentialLimiter(0.005, 1000.0)
    delays = [limiter.when("x") for _ in range(20)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert delays[-1] == 1000.0
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert limiter.num_requeues("x") == 20
    assert limiter.when("y") == 0.005, "items back off independently"
    limiter.forget("x")
    assert limiter.num_requeues("x") == 0
    assert limiter.when("x") == 0.005
    for _ in range(500):
        limiter.when("z")
    assert limiter.when("z") == 1000.0


def test_bucket_allows_burst_of_100_then_10_per_second() -> None:
    clock = FakeClock()
    bucket = BucketLimiter(10.0, 100, clock)
    assert all(bucket.when(i) == 0.0 for i in range(100))
    assert bucket.when("101") == pytest.approx(0.1)
    assert bucket.when("102") == pytest.approx(0.2)
    clock.advance(10.0)  # refills 100 tokens, minus the 2 borrowed
    assert sum(1 for i in range(98) if bucket.when(i) == 0.0) == 98
    assert bucket.when("next") > 0


async def test_rate_limited_retry_is_the_max_of_item_backoff_and_bucket() -> None:
    clock = FakeClock()
    metrics = Metrics()
    q: WorkQueue[str] = WorkQueue(clock=clock, rate_limiter=default_controller_rate_limiter(clock),
                                  metrics=metrics, name="svc")
    limiter = default_controller_rate_limiter(clock)
    # Burst used up by distinct items: the bucket, not the 5 ms item backoff, sets the delay.
    assert max(limiter.when(f"i{i}") for i in range(100)) == 0.005
    assert limiter.when("late") == pytest.approx(0.1)

    for _ in range(5):
        q.add_rate_limited("a")  # the earliest pending retry wins: 5 ms
    assert q.num_requeues("a") == 5
    assert metrics.retries == 5
    await settle()
    clock.advance(0.004)
    await settle()
    assert len(q) == 0
    clock.advance(0.002)
    await settle()
    assert len(q) == 1
    item = await q.get()
    q.forget(item)
    q.done(item)
    assert q.num_requeues("a") == 0


async def test_get_hands_out_queued_items_after_shutdown_then_raises() -> None:
    clock = FakeClock()
    metrics = Metrics()
    q: WorkQueue[str] = WorkQueue(clock=clock, metrics=metrics)
    q.add("a")
    q.add("b")
    q.shutdown()
    q.add("c")  # ignored once shutting down
    assert await q.get() == "a"
    assert await q.get() == "b"
    with pytest.raises(ShutDown):
        await q.get()
    assert metrics.adds == 2


async def test_shutdown_with_drain_waits_for_in_flight_work() -> None:
    clock = FakeClock()
    metrics = Metrics()
    q: WorkQueue[str] = WorkQueue(clock=clock, metrics=metrics)
    q.add("a")
    clock.advance(1.5)
    item = await q.get()
    assert metrics.latencies == [1.5]
    drained = asyncio.create_task(q.shutdown_with_drain())
    await settle()
    assert not drained.done()
    clock.advance(2.0)
    q.done(item)
    await asyncio.wait_for(drained, 10)
    assert metrics.durations == [2.0]
    with pytest.raises(ShutDown):
        await q.get()


async def test_idle_getter_blocks_until_an_add() -> None:
    q: WorkQueue[int] = WorkQueue(clock=FakeClock())
    getter = asyncio.create_task(q.get())
    await settle()
    assert not getter.done()
    q.add(7)
    assert await asyncio.wait_for(getter, 10) == 7
