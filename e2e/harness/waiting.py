"""Waiting for a condition with a deadline, explaining what was seen when it never came."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


def _describe(describe: Callable[[], str] | None) -> str:
    if describe is None:
        return ""
    try:
        return "\n" + describe()
    except Exception as err:  # the description must never hide the timeout itself
        return f"\n(describe() failed: {err!r})"


async def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float = 30.0,  # noqa: ASYNC109 - the shared contract names it; a deadline, not a cancel scope
    interval: float = 0.1,
    describe: Callable[[], str] | None = None,
) -> Any:
    """Polls `predicate` (sync or async) until it returns something truthy, and returns that.

    On timeout raises AssertionError carrying describe()'s output (the relevant objects, say). Exceptions
    from the predicate propagate: a broken check should fail loudly, not time out.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            name = getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(f"condition {name} not met within {timeout:.1f}s{_describe(describe)}")
        await asyncio.sleep(interval)


def wait_until(
    predicate: Callable[[], Any],
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
    describe: Callable[[], str] | None = None,
) -> Any:
    """Synchronous wait_for for sync tests and harness code."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            name = getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(f"condition {name} not met within {timeout:.1f}s{_describe(describe)}")
        time.sleep(interval)
