"""Informer.wait_caught_up: the takeover check that a cache reflects a quorum read's resourceVersion."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from controller.kube.backoff import Backoff
from controller.kube.client import KubeClient
from controller.kube.clock import FakeClock
from controller.kube.informer import Informer, ListSettings
from controller.kube.resources import SERVICES

from .fakeapi import FakeApiServer, bookmark, event_line, list_of, service


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

async def test_caught_up_only_once_an_event_or_bookmark_reaches_the_resource_version(
    fake_api: FakeApiServer, fake_client: KubeClient, fast_backoff: Backoff
) -> None:
    release_bookmark = asyncio.Event()

    async def watch(request: web.Request, resp: web.StreamResponse) -> None:
        await resp.write(event_line("MODIFIED", service("a", 15)))
        await release_bookmark.wait()
        await resp.write(bookmark(30))
        await asyncio.sleep(3600)

    fake_api.lists = [list_of(10, service("a", 9))]
    fake_api.watches = [watch]
    clock = FakeClock()
    informer = Informer(fake_client, SERVICES, backoff=fast_backoff, clock=clock,
                        settings=ListSettings(watch_list=False))
    assert not await informer.wait_caught_up("5", 0.0)  # not even listed yet
    task = asyncio.create_task(informer.run())
    try:
        assert await asyncio.wait_for(informer.wait_caught_up("15", None), 10)
        waiting = asyncio.create_task(informer.wait_caught_up("20", None))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # rv 15 < 20: the quiet watch has not shown rv 20 yet
        release_bookmark.set()
        assert await asyncio.wait_for(waiting, 10)
        # Bounded by the informer's clock: gives up when fake time passes the timeout.
        bounded = asyncio.create_task(informer.wait_caught_up("31", 1.0))
        await asyncio.sleep(0.05)
        clock.advance(1.0)
        assert not await asyncio.wait_for(bounded, 10)
        assert not await informer.wait_caught_up("not-an-integer", 0.0)
    finally:
        await stop(task)


async def test_a_consistent_relist_is_not_caught_up_until_it_finished(
    fake_api: FakeApiServer, fake_client: KubeClient, fast_backoff: Backoff
) -> None:
    fake_api.lists = [list_of(10, service("a", 9)), list_of(50, service("a", 45))]
    informer = Informer(fake_client, SERVICES, backoff=fast_backoff, settings=ListSettings(watch_list=False))
    task = asyncio.create_task(informer.run())
    try:
        assert await asyncio.wait_for(informer.wait_caught_up("10", None), 10)
        informer.request_consistent_relist()
        assert not await informer.wait_caught_up("10", 0.0)  # a relist is pending: the old RV does not count
        await stop(task)
        task = asyncio.create_task(informer.run())
        assert await asyncio.wait_for(informer.wait_caught_up("50", None), 10)
        assert fake_api.list_queries[-1].get("resourceVersion") in (None, "")  # consistent: a quorum read
        assert informer.store.get("ns/a") is not None
        assert informer.store.get("ns/a")["metadata"]["resourceVersion"] == "45"  # type: ignore[index]
    finally:
        await stop(task)


async def test_consistent_as_of_is_when_the_last_consistent_read_was_requested(
    fake_api: FakeApiServer, fake_client: KubeClient, fast_backoff: Backoff
) -> None:
    fake_api.lists = [
        list_of(10, service("a", 9)), list_of(20, service("a", 19)), list_of(50, service("a", 45))
    ]
    informer = Informer(fake_client, SERVICES, backoff=fast_backoff, settings=ListSettings(watch_list=False))
    assert informer.consistent_as_of() is None  # nothing read yet
    before = time.monotonic_ns()
    task = asyncio.create_task(informer.run())
    try:
        assert await asyncio.wait_for(informer.wait_caught_up("10", None), 10)
        first = informer.consistent_as_of()
        assert first is not None and before < first < time.monotonic_ns()
        # A relist at our last resourceVersion (NotOlderThan) is no newer a guarantee than what we had.
        informer._need_list = True
        await stop(task)
        assert informer.consistent_as_of() is None  # mid-relist: the store is being replaced
        task = asyncio.create_task(informer.run())
        assert await asyncio.wait_for(informer.wait_caught_up("20", None), 10)
        assert fake_api.list_queries[-1].get("resourceVersion") == "10"
        assert informer.consistent_as_of() == first
        # A consistent relist requested later moves it forward.
        informer.request_consistent_relist()
        await stop(task)
        mark = time.monotonic_ns()
        task = asyncio.create_task(informer.run())
        assert await asyncio.wait_for(informer.wait_caught_up("50", None), 10)
        latest = informer.consistent_as_of()
        assert latest is not None and latest > mark
    finally:
        await stop(task)


async def test_a_watch_list_from_resource_version_empty_is_a_consistent_read(
    fake_api: FakeApiServer, fake_client: KubeClient, fast_backoff: Backoff
) -> None:
    async def watch_list(request: web.Request, resp: web.StreamResponse) -> None:
        await resp.write(event_line("ADDED", service("a", 9)))
        await resp.write(bookmark(12, initial_events_end=True))
        await asyncio.sleep(3600)

    fake_api.watches = [watch_list]
    informer = Informer(fake_client, SERVICES, backoff=fast_backoff)
    before = time.monotonic_ns()
    task = asyncio.create_task(informer.run())
    try:
        assert await asyncio.wait_for(informer.wait_caught_up("12", None), 10)
        as_of = informer.consistent_as_of()
        assert as_of is not None and as_of > before
        assert fake_api.watch_queries[0].get("sendInitialEvents") == "true"
    finally:
        await stop(task)
