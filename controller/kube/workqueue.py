"""A rate-limited, delaying work queue with client-go's guarantees.

- An item waiting in the queue is held once however often it is added (the dirty set).
- An item is never handed to two workers at once (the processing set); an add that arrives while
  it is being processed makes it run exactly once more, after ``done``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

from .clock import Clock, RealClock
from .ratelimit import RateLimiter, default_controller_rate_limiter

log = logging.getLogger(__name__)

T = TypeVar("T", bound=Hashable)


class ShutDown(Exception):
    """Raised by ``get`` once the queue is shut down and holds nothing more."""


class QueueMetrics(Protocol):
    def add(self, name: str) -> None: ...

    def depth(self, name: str, n: int) -> None: ...

    def queue_latency(self, name: str, seconds: float) -> None: ...

    def work_duration(self, name: str, seconds: float) -> None: ...

    def retry(self, name: str) -> None: ...


class NoMetrics:
    def add(self, name: str) -> None:
        return None

    def depth(self, name: str, n: int) -> None:
        return None

    def queue_latency(self, name: str, seconds: float) -> None:
        return None

    def work_duration(self, name: str, seconds: float) -> None:
        return None

    def retry(self, name: str) -> None:
        return None


class WorkQueue(Generic[T]):
    def __init__(
        self,
        *,
        clock: Clock | None = None,
        rate_limiter: RateLimiter | None = None,
        metrics: QueueMetrics | None = None,
        name: str = "",
    ) -> None:
        self.name = name
        self._clock = clock or RealClock()
        self._limiter = rate_limiter or default_controller_rate_limiter(self._clock)
        self._metrics: QueueMetrics = metrics or NoMetrics()
        self._queue: deque[T] = deque()
        self._dirty: set[T] = set()
        self._processing: set[T] = set()
        self._added_at: dict[T, float] = {}
        self._started_at: dict[T, float] = {}
        # Set whenever the queue or processing set changes; waiters re-check their condition.
        self._changed = asyncio.Event()
        self._shutting_down = False
        # item -> (ready time, timer task); a later add_after never postpones an earlier one.
        self._waiting: dict[T, tuple[float, asyncio.Task[None]]] = {}

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def add(self, item: T) -> None:
        if self._shutting_down or item in self._dirty:
            return
        self._metrics.add(self.name)
        self._dirty.add(item)
        self._added_at.setdefault(item, self._clock.monotonic())
        if item in self._processing:
            # done() will queue it again; queuing it now would let a second worker take it.
            return
        self._queue.append(item)
        self._metrics.depth(self.name, len(self._queue))
        self._notify()

    def add_after(self, item: T, delay: float) -> None:
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(item)
            return
        ready = self._clock.monotonic() + delay
        current = self._waiting.get(item)
        if current is not None:
            if current[0] <= ready:
                return
            current[1].cancel()
        task = asyncio.get_running_loop().create_task(self._fire_later(item, ready, delay))
        self._waiting[item] = (ready, task)

    async def _fire_later(self, item: T, ready: float, delay: float) -> None:
        await self._clock.sleep(delay)
        entry = self._waiting.get(item)
        if entry is not None and entry[0] == ready:
            del self._waiting[item]
            self.add(item)

    def add_rate_limited(self, item: T) -> None:
        self._metrics.retry(self.name)
        self.add_after(item, self._limiter.when(item))

    def forget(self, item: T) -> None:
        self._limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        return self._limiter.num_requeues(item)

    async def get(self) -> T:
        while not self._queue and not self._shutting_down:
            self._changed.clear()
            await self._changed.wait()
        if not self._queue:
            raise ShutDown(self.name)
        item = self._queue.popleft()
        now = self._clock.monotonic()
        self._metrics.depth(self.name, len(self._queue))
        added = self._added_at.pop(item, None)
        if added is not None:
            self._metrics.queue_latency(self.name, now - added)
        self._started_at[item] = now
        self._processing.add(item)
        self._dirty.discard(item)
        return item

    def done(self, item: T) -> None:
        started = self._started_at.pop(item, None)
        if started is not None:
            self._metrics.work_duration(self.name, self._clock.monotonic() - started)
        self._processing.discard(item)
        if item in self._dirty:
            self._queue.append(item)
            self._metrics.depth(self.name, len(self._queue))
        self._notify()

    def shutdown(self) -> None:
        """Stop accepting items. Workers still receive what is queued, then ``ShutDown``."""
        self._shutting_down = True
        for _, task in self._waiting.values():
            task.cancel()
        self._waiting.clear()
        self._notify()

    async def shutdown_with_drain(self) -> None:
        """Shut down, then wait until every queued and in-flight item is done."""
        self.shutdown()
        while self._queue or self._processing:
            self._changed.clear()
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
