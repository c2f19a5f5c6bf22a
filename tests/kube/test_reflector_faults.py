"""Reflector behaviour under faults only a scripted server can produce on demand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from controller.kube.backoff import Backoff
from controller.kube.client import KubeClient
from controller.kube.informer import Informer, ListSettings
from controller.kube.resources import SERVICES

from .fakeapi import (
    FakeApiServer,
    ListScript,
    bookmark,
    cut_connection,
    event_line,
    expired,
    list_of,
    service,
)
from .util import eventually


class Recorder:
    def __init__(self, informer: Informer) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.informer = informer
        informer.add_handlers(self.on_add, self.on_update, self.on_delete)

    def _rv(self, obj: dict[str, Any]) -> str:
        return str(obj["metadata"]["resourceVersion"])

    def on_add(self, obj: dict[str, Any]) -> None:
        # Handlers run after the store changed: the cache must already hold this object.
        assert self.informer.store.get(f"ns/{obj['metadata']['name']}") is obj
        self.events.append(("add", obj["metadata"]["name"], self._rv(obj)))

    def on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        assert self.informer.store.get(f"ns/{new['metadata']['name']}") is new
        self.events.append(("update", new["metadata"]["name"], self._rv(new)))

    def on_delete(self, obj: dict[str, Any]) -> None:
        assert self.informer.store.get(f"ns/{obj['metadata']['name']}") is None
        self.events.append(("delete", obj["metadata"]["name"], self._rv(obj)))


@pytest.fixture
async def running(
    fake_api: FakeApiServer, fake_client: KubeClient, fast_backoff: Backoff
) -> AsyncIterator[tuple[Informer, Recorder, list[str]]]:
    restarts: list[str] = []
    # The fake server speaks LIST + WATCH; watch-list is tested against the real API server.
    informer = Informer(fake_client, SERVICES, backoff=fast_backoff, read_timeout=0.5,
                        on_restart=restarts.append, settings=ListSettings(watch_list=False, page_size=2))
    recorder = Recorder(informer)
    yield informer, recorder, restarts


def start(informer: Informer) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(informer.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_line_cut_in_half_then_drop_resumes_from_last_complete_event(
    fake_api: FakeApiServer, running: tuple[Informer, Recorder, list[str]]
) -> None:
    informer, rec, restarts = running
    fake_api.lists = [list_of(10, service("a", 10))]

    async def first(request: web.Request, resp: web.StreamResponse) -> None:
        await resp.write(event_line("ADDED", service("b", 11)))
        half = event_line("MODIFIED", service("b", 12, ports=[1]))
        await resp.write(half[: len(half) // 2])
        await asyncio.sleep(0.1)
        cut_connection(request)

    async def second(request: web.Request, resp: web.StreamResponse) -> None:
        await resp.write(event_line("MODIFIED", service("b", 12, ports=[1])))
        await asyncio.sleep(3600)

    fake_api.watches = [first, second]
    task = start(informer)
    try:
        await eventually(lambda: len(fake_api.watch_queries) >= 2, what="second watch")
        await eventually(lambda: ("update", "b", "12") in rec.events, what="event after reconnect")
    finally:
        await stop(task)
    assert rec.events == [("add", "a", "10"), ("add", "b", "11"), ("update", "b", "12")]
    assert fake_api.watch_queries[1]["resourceVersion"] == "11"
    assert len(fake_api.list_queries) == 1, "a dropped connection must not cause a relist"
    assert restarts[0] == "disconnect"
    # The transform hook ran on watch events too.
    b = informer.store.get("ns/b")
    assert b is not None and "managedFields" not in b["metadata"]


async def test_silent_stream_hits_read_timeout_and_rewatches(
    fake_api: FakeApiServer, running: tuple[Informer, Recorder, list[str]]
) -> None:
    informer, rec, restarts = running
    fake_api.lists = [list_of(5)]

    async def silent(request: web.Request, resp: web.StreamResponse) -> None:
        await resp.write(event_line("ADDED", service("a", 6)))
        await asyncio.sleep(3600)  # the connection stays open and says nothing

    async def healthy(request: web.Request, resp: web.StreamResponse) -> None:
        await resp.write(event_line("ADDED", service("b", 7)))
        await asyncio.sleep(3600)

    fake_api.watches = [silent, healthy]
    task = start(informer)
    try:
        await eventually(lambda: ("add", "b", "7") in rec.events, what="event on the restarted watch")
    finally:
        await stop(task)
    assert restarts[0] == "timeout"
    assert fake_api.watch_queries[1]["resourceVersion"] == "6"
    assert len(fake_api.list_queries) == 1


async def test_watch_410_relists_at_last_rv_and_emits_deletes_and_updates(
    fake_api: FakeApiServer, running: tuple[Informer, Recorder, list[str]]
) -> None:
    informer, rec, restarts = running
    fake_api.lists = [
        list_of(100, service("a", 90), service("b", 91), service("c", 92)),
        list_of(120, service("a", 101), service("c", 110), service("d", 115)),
    ]

    async def then_gone(request: web.Request, resp: web.StreamResponse) -> None:
        await resp.write(event_line("MODIFIED", service("a", 101)))
        await resp.write(bookmark(102))
        await resp.write(expired())
        await asyncio.sleep(3600)

    fake_api.watches = [then_gone]
    task = start(informer)
    try:
        await eventually(lambda: len(fake_api.watch_queries) >= 2, what="watch after relist")
    finally:
        await stop(task)
    assert rec.events[:4] == [("add", "a", "90"), ("add", "b", "91"), ("add", "c", "92"),
                              ("update", "a", "101")]
    # Relist: b vanished, c changed, d is new; a is unchanged so it emits nothing.
    assert sorted(rec.events[4:]) == [("add", "d", "115"), ("delete", "b", "91"), ("update", "c", "110")]
    assert sorted(informer.store.keys()) == ["ns/a", "ns/c", "ns/d"]
    assert restarts == ["expired"]
    # The first LIST pages for real: consistent ("0" would be served whole from the watch cache).
    assert "resourceVersion" not in fake_api.list_queries[0]
    # As client-go: the watch expired, but a LIST at the last resourceVersion we saw is still answerable
    # (at least as fresh, from the watch cache), so that is tried first rather than a quorum read.
    assert fake_api.list_queries[1]["resourceVersion"] == "102"
    assert fake_api.list_queries[1]["resourceVersionMatch"] == "NotOlderThan"
    assert fake_api.watch_queries[1]["resourceVersion"] == "120"


async def test_relist_refused_at_last_rv_falls_back_to_a_consistent_list_at_once(
    fake_api: FakeApiServer, running: tuple[Informer, Recorder, list[str]]
) -> None:
    informer, rec, restarts = running
    gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"}
    fake_api.lists = [
        list_of(100, service("a", 90)),
        refuse(gone),
        list_of(130, service("a", 125)),
    ]
    fake_api.watches = [gone_watch]
    task = start(informer)
    try:
        await eventually(lambda: len(fake_api.watch_queries) >= 2, what="watch after the consistent relist")
    finally:
        await stop(task)
    rvs = [q.get("resourceVersion") for q in fake_api.list_queries]
    assert rvs == [None, "100", None], "consistent, then at the last RV, then consistent again"
    assert fake_api.watch_queries[1]["resourceVersion"] == "130"
    assert rec.events == [("add", "a", "90"), ("update", "a", "125")]
    assert restarts == ["expired", "expired"]


async def gone_watch(request: web.Request, resp: web.StreamResponse) -> None:
    await resp.write(expired())
    await asyncio.sleep(3600)


async def test_bookmarks_advance_resource_version_without_events(
    fake_api: FakeApiServer, running: tuple[Informer, Recorder, list[str]]
) -> None:
    informer, rec, restarts = running
    fake_api.lists = [list_of(10, service("a", 10))]

    async def bookmarks_then_close(request: web.Request, resp: web.StreamResponse) -> None:
        await resp.write(bookmark(200))
        await resp.write(bookmark(250))
        # returning ends the chunked body normally: a watch timeout on the server side

    fake_api.watches = [bookmarks_then_close]
    task = start(informer)
    try:
        await eventually(lambda: len(fake_api.watch_queries) >= 2, what="rewatch")
    finally:
        await stop(task)
    first = fake_api.watch_queries[0]
    assert first["allowWatchBookmarks"] == "true"
    assert 300 <= int(first["timeoutSeconds"]) < 600
    assert fake_api.watch_queries[1]["resourceVersion"] == "250"
    assert rec.events == [("add", "a", "10")]
    assert restarts == ["closed"]
    assert len(fake_api.list_queries) == 1, "a normal close resumes without relisting"


async def test_paged_list_follows_continue_tokens(
    fake_api: FakeApiServer, running: tuple[Informer, Recorder, list[str]]
) -> None:
    informer, _, _ = running
    fake_api.lists = [
        list_of(50, service("a", 1), service("b", 2), cont="page2"),
        list_of(50, service("c", 3), service("d", 4), cont="page3"),
        list_of(50, service("e", 5)),
    ]
    task = start(informer)
    try:
        await asyncio.wait_for(informer.wait_synced(), 20)
        await eventually(lambda: bool(fake_api.watch_queries), what="watch")
    finally:
        await stop(task)
    assert informer.has_synced()
    assert sorted(informer.store.keys()) == ["ns/a", "ns/b", "ns/c", "ns/d", "ns/e"]
    assert [q.get("continue") for q in fake_api.list_queries] == [None, "page2", "page3"]
    assert all(q["limit"] == "2" for q in fake_api.list_queries)
    # The first LIST pages for real: consistent ("0" would be served whole from the watch cache).
    assert "resourceVersion" not in fake_api.list_queries[0]
    assert fake_api.watch_queries[0]["resourceVersion"] == "50"
    # kind/apiVersion are filled in for list items (the API leaves them out)
    a = informer.store.get("ns/a")
    assert a is not None and a["kind"] == "Service"


async def test_late_handler_sees_cached_objects_as_adds(
    fake_api: FakeApiServer, running: tuple[Informer, Recorder, list[str]]
) -> None:
    informer, _, _ = running
    fake_api.lists = [list_of(3, service("a", 1), service("b", 2))]
    task = start(informer)
    try:
        await asyncio.wait_for(informer.wait_synced(), 20)
        seen: list[str] = []
        informer.add_handlers(on_add=lambda o: seen.append(o["metadata"]["name"]))
    finally:
        await stop(task)
    assert sorted(seen) == ["a", "b"]


async def test_429_backs_off_and_rewatches_without_relisting(
    fake_api: FakeApiServer, running: tuple[Informer, Recorder, list[str]]
) -> None:
    informer, rec, restarts = running
    fake_api.lists = [list_of(10, service("a", 10))]

    async def healthy(request: web.Request, resp: web.StreamResponse) -> None:
        await resp.write(event_line("ADDED", service("b", 11)))
        await asyncio.sleep(3600)

    fake_api.watches = [429, 429, healthy]
    task = start(informer)
    try:
        await eventually(lambda: ("add", "b", "11") in rec.events, what="event after throttling")
    finally:
        await stop(task)
    assert restarts[:2] == ["throttled", "throttled"]
    assert [q["resourceVersion"] for q in fake_api.watch_queries] == ["10", "10", "10"]
    assert len(fake_api.list_queries) == 1


def refuse(status: dict[str, Any]) -> ListScript:
    """A LIST answered with an error Status (410 Gone here)."""

    def answer(request: web.Request) -> dict[str, Any]:
        raise web.HTTPGone(text=orjson.dumps(status).decode(), content_type="application/json")

    return answer


class CountingBackoff(Backoff):
    def __init__(self) -> None:
        super().__init__(initial=0.01, cap=0.05)
        self.sleeps = 0

    async def sleep(self) -> float:
        self.sleeps += 1
        return await super().sleep()


class SlowListServer(FakeApiServer):
    """The first `slow` LISTs answer only after `delay` seconds (an API server drowning in a huge list)."""

    def __init__(self, slow: int, delay: float) -> None:
        super().__init__()
        self.slow = slow
        self.delay = delay
        self.backoff_at_list: list[int] = []
        self.backoff: CountingBackoff | None = None

    async def _services(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            self.backoff_at_list.append(self.backoff.sleeps if self.backoff else -1)
            if len(self.backoff_at_list) <= self.slow:
                await asyncio.sleep(self.delay)
        return await super()._services(request)


async def test_list_timeout_backs_off_before_listing_again() -> None:
    server = SlowListServer(slow=3, delay=2.0)
    await server.start()
    client = KubeClient.for_host(server.url)
    backoff = server.backoff = CountingBackoff()
    restarts: list[str] = []
    server.lists = [list_of(10, service("a", 10))]
    informer = Informer(client, SERVICES, backoff=backoff, on_restart=restarts.append,
                        settings=ListSettings(watch_list=False, page_timeout=0.2))
    task = start(informer)
    try:
        await asyncio.wait_for(informer.wait_synced(), 30)
    finally:
        await stop(task)
        await client.close()
        await server.stop()
    assert restarts[:3] == ["list_timeout"] * 3
    # Each LIST after a timed-out one waited for the backoff first: no hammering of a struggling server.
    assert server.backoff_at_list == [0, 1, 2, 3]
    assert sorted(informer.store.keys()) == ["ns/a"]


async def test_expired_continue_token_falls_back_to_one_unpaginated_list(
    fake_api: FakeApiServer, running: tuple[Informer, Recorder, list[str]]
) -> None:
    informer, rec, restarts = running
    gone = {"kind": "Status", "code": 410, "reason": "Expired",
            "message": "The provided continue parameter is too old to display a consistent list result."}
    fake_api.lists = [
        list_of(50, service("a", 1), service("b", 2), cont="page2"),
        refuse(gone),
        list_of(60, service("a", 1), service("c", 55)),
    ]
    task = start(informer)
    try:
        await asyncio.wait_for(informer.wait_synced(), 20)
        await eventually(lambda: bool(fake_api.watch_queries), what="watch")
    finally:
        await stop(task)
    queries = fake_api.list_queries
    assert [q.get("continue") for q in queries] == [None, "page2", None]
    # client-go's pager: the fallback is one LIST without limit, consistent (no resourceVersion).
    assert "limit" not in queries[2] and "resourceVersion" not in queries[2]
    assert sorted(informer.store.keys()) == ["ns/a", "ns/c"]
    assert ("delete", "b", "2") in rec.events
    assert fake_api.watch_queries[0]["resourceVersion"] == "60"
    assert restarts == []
