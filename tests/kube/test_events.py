"""Event recorder: dedup into count bumps, per-object rate limit, never blocking the caller."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from controller.app import slim_service
from controller.kube.client import KubeClient
from controller.kube.clock import FakeClock
from controller.kube.events import EventRecorder, rfc3339
from controller.kube.informer import Informer
from controller.kube.leaderelection import Fenced
from controller.kube.resources import EVENTS, SERVICES
from e2e.harness.waiting import wait_for

from .util import eventually


class NeverAnswers:
    """A client whose requests hang: the recorder's queue fills and record() must still return."""

    def __init__(self) -> None:
        self.calls = 0

    async def request(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        await asyncio.Event().wait()
        return {}


async def test_record_never_blocks_and_drops_when_the_queue_is_full() -> None:
    client = NeverAnswers()
    rec = EventRecorder(client, queue_size=5, senders=1, clock=FakeClock())  # type: ignore[arg-type]
    runner = asyncio.create_task(rec.run())
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "n", "uid": "u"}}
    rec.record(obj, "Normal", "IPAllocated", "first")
    await asyncio.sleep(0.05)
    assert client.calls == 1  # the first one is stuck in flight
    for i in range(49):
        rec.record(obj, "Normal", "IPAllocated", f"message {i}")  # returns at once every time
    assert rec.dropped == 49 - 5
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


class Recording:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    async def request(self, method: str, path: str, *, body: Any = None, **kwargs: Any) -> dict[str, Any]:
        self.calls.append((method, path, body))
        return {}


async def test_rate_limit_per_object() -> None:
    client = Recording()
    clock = FakeClock()
    rec = EventRecorder(client, clock=clock, burst=3, refill_every=300.0)  # type: ignore[arg-type]
    runner = asyncio.create_task(rec.run())
    a = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "n", "uid": "ua"}}
    b = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b", "namespace": "n", "uid": "ub"}}
    for i in range(10):
        rec.record(a, "Warning", "AllocationFailed", f"try {i}")
    rec.record(b, "Normal", "IPAllocated", "ok")
    await rec.close()
    await asyncio.wait_for(runner, 10)
    names = [body["involvedObject"]["name"] for _, _, body in client.calls]
    # Per object: a's burst of 3 passes, the rest is dropped; b is not held back by a. (Events of
    # different objects go through different senders, so only per-object order is defined.)
    assert sorted(names) == ["a", "a", "a", "b"]


@pytest.mark.cluster
async def test_repeats_become_count_bumps_on_the_involved_object(admin: KubeClient, namespace: str) -> None:
    service = await admin.request(
        "POST",
        SERVICES.path(namespace=namespace),
        body={
            "metadata": {"name": "web"},
            "spec": {"type": "ClusterIP", "ports": [{"port": 80}]},
        },
    )
    # The Service as the controller holds it: listed by an informer, slimmed for the cache. (The create
    # answer carries kind; list items do not, and the cache must keep what Events need.)
    informer = Informer(admin, SERVICES, namespace=namespace, transform=slim_service)
    watching = asyncio.create_task(informer.run())
    await asyncio.wait_for(informer.wait_synced(), 30)
    cached = informer.store.get(f"{namespace}/web")
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    assert cached is not None and cached["metadata"]["uid"] == service["metadata"]["uid"]
    rec = EventRecorder(admin)
    runner = asyncio.create_task(rec.run())
    for _ in range(3):
        rec.record(cached, "Normal", "IPAllocated", "assigned 192.168.10.1")
    rec.record(cached, "Warning", "IPOutsidePool", "192.168.10.1 is outside every pool")
    await rec.close()
    await asyncio.wait_for(runner, 10)

    async def events() -> list[dict[str, Any]]:
        # As kubectl describe / kubectl get events --field-selector ask for them.
        selector = "involvedObject.kind=Service,involvedObject.name=web"
        page = await admin.request("GET", EVENTS.path(namespace=namespace), query={"fieldSelector": selector})
        items: list[dict[str, Any]] = page["items"]
        return items

    await wait_for(lambda: events(), timeout=10)
    items = await events()
    by_reason = {e["reason"]: e for e in items}
    assert len(items) == 2, items
    allocated = by_reason["IPAllocated"]
    assert allocated["count"] == 3
    assert allocated["type"] == "Normal"
    assert allocated["involvedObject"]["uid"] == service["metadata"]["uid"]
    assert allocated["involvedObject"]["kind"] == "Service"
    assert allocated["source"]["component"] == "stablelb-controller"
    assert by_reason["IPOutsidePool"]["type"] == "Warning"
    assert by_reason["IPOutsidePool"]["count"] == 1


async def test_events_of_different_objects_are_written_concurrently() -> None:
    client = NeverAnswers()
    rec = EventRecorder(client, senders=4, clock=FakeClock())  # type: ignore[arg-type]
    runner = asyncio.create_task(rec.run())
    for i in range(40):
        obj = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"s{i}", "namespace": "n", "uid": f"u{i}"},
        }
        rec.record(obj, "Normal", "IPAllocated", "assigned")
    await asyncio.sleep(0.05)
    # One request in flight per sender: a slow API server no longer serialises every Event.
    assert client.calls == 4
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


class Budget:
    """A write fence like the controller's gate: refuses when the lease time is gone."""

    def __init__(self, remaining: float) -> None:
        self.remaining = remaining

    def __call__(self, timeout: float) -> float:
        if self.remaining <= 0:
            raise Fenced("not leading")
        return min(timeout, self.remaining)


class RecordingTimeouts:
    def __init__(self) -> None:
        self.timeouts: list[float] = []

    async def request(self, method: str, path: str, *, timeout: float = 30.0,  # noqa: ASYNC109
                      **kwargs: Any) -> dict[str, Any]:
        self.timeouts.append(timeout)
        return {}


async def test_events_pass_the_leadership_fence_and_are_bounded_by_it() -> None:
    client, fence = RecordingTimeouts(), Budget(2.5)
    rec = EventRecorder(client, clock=FakeClock(), senders=1, fence=fence)  # type: ignore[arg-type]
    runner = asyncio.create_task(rec.run())
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "n", "uid": "u"}}
    rec.record(obj, "Normal", "IPAllocated", "assigned 192.0.2.1")
    await eventually(lambda: len(client.timeouts) == 1, what="the first Event")
    fence.remaining = 0.0  # leadership lost: queued Events are not written any more
    rec.record(obj, "Normal", "IPReleased", "released 192.0.2.1")
    await rec.close()
    await asyncio.wait_for(runner, 10)
    assert client.timeouts == [2.5]


class FailsOnce:
    """The first write hits a bug (an exception nobody expects); later writes work."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.failed = False

    async def request(self, method: str, path: str, *, body: Any = None, **kwargs: Any) -> dict[str, Any]:
        if not self.failed:
            self.failed = True
            raise RuntimeError("bug in a sender")
        self.bodies.append(body)
        return {}


async def test_a_sender_that_dies_is_restarted_and_its_shard_keeps_writing() -> None:
    client = FailsOnce()
    rec = EventRecorder(client, senders=1, clock=FakeClock())  # type: ignore[arg-type]
    runner = asyncio.create_task(rec.run())
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "n", "uid": "u"}}
    rec.record(obj, "Normal", "IPAllocated", "assigned 192.0.2.1")
    await eventually(lambda: client.failed, what="the failing write")
    rec.record(obj, "Normal", "IPReleased", "released 192.0.2.1")
    await eventually(lambda: len(client.bodies) == 1, what="the next Event of the same shard")
    assert client.bodies[0]["reason"] == "IPReleased"
    assert rec.alive() and not runner.done()
    await rec.close()
    await asyncio.wait_for(runner, 10)


def test_rfc3339_to_the_second_follows_the_clock_both_ways() -> None:
    # The text of the last second is reused: it must never outlive that second, forwards or backwards.
    assert rfc3339(0.0) == "1970-01-01T00:00:00Z"
    assert rfc3339(59.99) == "1970-01-01T00:00:59Z"
    assert rfc3339(60.0) == "1970-01-01T00:01:00Z"
    assert rfc3339(59.0) == "1970-01-01T00:00:59Z"
    assert rfc3339(1_798_765_432.5) == "2027-01-01T01:03:52Z"
