"""Exponential backoff with jitter that forgets past failures after a healthy stretch."""

from __future__ import annotations

import random

from .clock import Clock, RealClock


class Backoff:
    """client-go's reflector backoff: 0.8 s doubling to 30 s, jittered, reset after 2 min healthy."""

    def __init__(
        self,
        initial: float = 0.8,
        cap: float = 30.0,
        *,
        factor: float = 2.0,
        jitter: float = 1.0,
        reset_after: float = 120.0,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self.reset_after = reset_after
        self._clock = clock or RealClock()
        self._rng = rng or random.Random()
        self._current = initial
        self._last_failure: float | None = None

    def next_delay(self) -> float:
        """The delay before the next attempt after a failure, and record that failure."""
        now = self._clock.monotonic()
        if self._last_failure is not None and now - self._last_failure > self.reset_after:
            self._current = self.initial
        base = self._current
        self._current = min(self._current * self.factor, self.cap)
        self._last_failure = now
        return base + self._rng.random() * self.jitter * base

    async def sleep(self) -> float:
        delay = self.next_delay()
        await self._clock.sleep(delay)
        # Time spent waiting is not "healthy" time: measure the reset window from the retry.
        self._last_failure = self._clock.monotonic()
        return delay
