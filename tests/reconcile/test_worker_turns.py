"""A Service worker takes one queue item per turn of the event loop, so a long start-up pass of checks that
write nothing (and so never suspend) cannot hold the loop: answers, watch events and lease renewals that
arrive meanwhile are handled between two items."""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace
from typing import Any

from opentelemetry.trace import NoOpTracer

from controller.app import Controller
from controller.kube.workqueue import WorkQueue
from controller.reconcile.tracing import EventLinks


async def test_other_tasks_run_between_two_items_that_never_suspend() -> None:
    queue: WorkQueue[str] = WorkQueue(name="services")
    for i in range(200):
        queue.add(f"ns/svc-{i}")
    order: list[str] = []
    all_done = asyncio.Event()

    async def reconcile(key: str, **_: Any) -> None:
        order.append("item")  # a check that writes nothing: no await inside
        if order.count("item") == 200:
            all_done.set()

    async def other() -> None:  # what else the loop has to do: a socket read, a timer
        while True:
            order.append("other")
            await asyncio.sleep(0)

    worker_self = SimpleNamespace(links=EventLinks(NoOpTracer()))
    worker = asyncio.create_task(Controller._worker(worker_self, queue, reconcile))  # type: ignore[arg-type]
    ticker = asyncio.create_task(other())
    await asyncio.wait_for(all_done.wait(), 5)
    queue.shutdown()
    await asyncio.wait_for(worker, 5)
    ticker.cancel()
    await asyncio.gather(ticker, return_exceptions=True)
    items = [i for i, what in enumerate(order) if what == "item"]
    # Between any two items the other task ran at least once.
    assert all(b - a >= 2 for a, b in itertools.pairwise(items)), order[:40]
