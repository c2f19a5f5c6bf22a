"""The fault proxy itself, against the real API server, through the controller's own HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from controller.kube.client import KubeClient
from e2e.harness import LocalCluster, wait_for
from e2e.harness.faultproxy import FaultProxy, Request, watches, writes

pytestmark = pytest.mark.cluster

MERGE = "application/merge-patch+json"


@pytest.fixture
def proxy(cluster: LocalCluster) -> Iterator[FaultProxy]:
    with FaultProxy.start(cluster.server) as p:
        yield p


@pytest.fixture
async def client(proxy: FaultProxy, cluster: LocalCluster) -> AsyncIterator[KubeClient]:
    c = KubeClient.for_host(proxy.url, token=cluster.token, verify_ssl=False)
    yield c
    await c.close()


def svc_path(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/services" + (f"/{name}" if name else "")


def svc(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}}


class Watch:
    """A watch through the proxy, its lines collected by a task."""

    def __init__(
        self, client: KubeClient, path: str, rv: str, read_timeout: float = 60.0, **query: str
    ) -> None:
        self.names: list[str] = []
        self.error: BaseException | None = None
        self.ended = False
        full = {"watch": "true", "resourceVersion": rv, **query}
        self._task = asyncio.create_task(self._run(client, path, full, read_timeout))

    async def _run(self, client: KubeClient, path: str, query: dict[str, str], read_timeout: float) -> None:
        try:
            async for line in client.stream_lines(path, query=query, read_timeout=read_timeout):
                self.names.append(json.loads(line)["object"]["metadata"]["name"])
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.error = exc
        self.ended = True

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def services_watch(
    client: KubeClient, cluster: LocalCluster, namespace: str, rv: str = "", **kwargs: Any
) -> AsyncIterator[Watch]:
    """A Watch of the namespace's Services through the proxy, from `rv` (default: now), closed at the end."""
    rv = rv or cluster.api.get(svc_path(namespace))["metadata"]["resourceVersion"]
    watch = Watch(client, svc_path(namespace), rv, **kwargs)
    try:
        yield watch
    finally:
        await watch.close()


def test_request_reads_kubernetes_paths() -> None:
    r = Request("PATCH", "/api/v1/namespaces/ns1/services/web/status?fieldManager=x")
    assert (r.namespace, r.resource, r.name, r.subresource, r.write, r.watch) == (
        "ns1", "services", "web", "status", True, False
    )
    w = Request("GET", "/apis/stablelb.io/v1alpha1/ippools?watch=true&resourceVersion=5")
    assert (w.resource, w.watch, w.namespace) == ("ippools", True, "")
    n = Request("GET", "/api/v1/namespaces?watch=1")
    assert (n.resource, n.name, n.watch) == ("namespaces", "", True)
    lease = Request("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l1")
    assert (lease.resource, lease.name, writes("leases")(lease), watches()(lease)) == (
        "leases", "l1", True, False
    )


async def test_passes_requests_through_and_records_where_writes_landed(
    client: KubeClient, proxy: FaultProxy, namespace: str, cluster: LocalCluster
) -> None:
    created = await client.request("POST", svc_path(namespace), body=svc("a"))
    patched = await client.request(
        "PATCH", svc_path(namespace, "a"), body={"metadata": {"labels": {"x": "1"}}}, content_type=MERGE
    )
    assert cluster.api.get(svc_path(namespace, "a"))["metadata"]["labels"] == {"x": "1"}
    records = proxy.exchanges(writes("services"))
    assert [(e.request.method, e.status, e.outcome) for e in records] == [
        ("POST", 201, "done"),
        ("PATCH", 200, "done"),
    ]
    assert [e.resource_version for e in records] == [
        created["metadata"]["resourceVersion"],
        patched["metadata"]["resourceVersion"],
    ]
    assert all(e.landed for e in records)


async def test_stall_silences_an_open_watch_until_cleared(
    client: KubeClient, proxy: FaultProxy, namespace: str, cluster: LocalCluster
) -> None:
    async with services_watch(client, cluster, namespace) as watch:
        cluster.api.post(svc_path(namespace), svc("before"))
        await wait_for(lambda: watch.names == ["before"], timeout=30)
        fault = proxy.stall(watches("services"))
        cluster.api.post(svc_path(namespace), svc("during"))
        await asyncio.sleep(1.5)  # the event is at the proxy by now; nothing may reach the client
        assert watch.names == ["before"] and not watch.ended
        assert fault.hits == 1
        fault.clear()
        await wait_for(lambda: watch.names == ["before", "during"], timeout=30)


async def test_stalling_open_watches_only_leaves_new_ones_working(
    client: KubeClient, proxy: FaultProxy, namespace: str, cluster: LocalCluster
) -> None:
    rv = cluster.api.get(svc_path(namespace))["metadata"]["resourceVersion"]
    async with services_watch(client, cluster, namespace, rv) as dead:
        await wait_for(lambda: proxy.open_exchanges(watches("services")), timeout=30)
        proxy.stall(watches("services"), open_only=True)
        async with services_watch(client, cluster, namespace, rv) as fresh:
            cluster.api.post(svc_path(namespace), svc("a"))
            await wait_for(lambda: fresh.names == ["a"], timeout=30)
            assert dead.names == [] and not dead.ended


async def test_a_stalled_watch_looks_dead_to_the_client_no_end_no_bytes(
    client: KubeClient, proxy: FaultProxy, namespace: str, cluster: LocalCluster
) -> None:
    proxy.stall(watches("services"))
    # timeoutSeconds=1: the server ends the watch at once, but the stall holds that end back too.
    async with services_watch(client, cluster, namespace, read_timeout=3.0, timeoutSeconds="1") as watch:
        cluster.api.post(svc_path(namespace), svc("unseen"))
        await wait_for(lambda: watch.ended, timeout=30)
        assert isinstance(watch.error, TimeoutError), watch.error
        assert watch.names == []
    (record,) = proxy.exchanges(watches("services"))
    assert record.outcome == "unanswered" and record.forwarded is not None


async def test_a_held_request_whose_client_gave_up_never_lands(
    client: KubeClient, proxy: FaultProxy, namespace: str, cluster: LocalCluster
) -> None:
    cluster.api.post(svc_path(namespace), svc("a"))
    fault = proxy.hold_requests(writes("services"))
    with pytest.raises(TimeoutError):
        await client.request(
            "PATCH", svc_path(namespace, "a"), body={"metadata": {"labels": {"late": "1"}}},
            content_type=MERGE, timeout=1.0,
        )
    await wait_for(lambda: proxy.exchanges(writes("services"))[-1].outcome == "abandoned", timeout=30)
    fault.clear()
    await asyncio.sleep(1.0)
    assert "labels" not in cluster.api.get(svc_path(namespace, "a"))["metadata"]
    (record,) = proxy.exchanges(writes("services"))
    assert record.forwarded is None and not record.landed and fault.hits == 1


async def test_a_request_held_for_a_while_lands_late(
    client: KubeClient, proxy: FaultProxy, namespace: str, cluster: LocalCluster
) -> None:
    cluster.api.post(svc_path(namespace), svc("a"))
    proxy.hold_requests(writes("services"), seconds=1.0)
    patched = await client.request(
        "PATCH", svc_path(namespace, "a"), body={"metadata": {"labels": {"late": "1"}}}, content_type=MERGE
    )
    (record,) = proxy.exchanges(writes("services"))
    assert record.forwarded is not None and record.forwarded - record.received >= 1.0
    assert record.landed and record.resource_version == patched["metadata"]["resourceVersion"]


async def test_a_held_response_means_the_write_landed_unseen(
    client: KubeClient, proxy: FaultProxy, namespace: str, cluster: LocalCluster
) -> None:
    cluster.api.post(svc_path(namespace), svc("a"))
    proxy.hold_responses(writes("services"))
    with pytest.raises(TimeoutError):
        await client.request(
            "PATCH", svc_path(namespace, "a"), body={"metadata": {"labels": {"seen": "no"}}},
            content_type=MERGE, timeout=1.0,
        )
    obj = cluster.api.get(svc_path(namespace, "a"))
    assert obj["metadata"]["labels"] == {"seen": "no"}
    await wait_for(lambda: proxy.exchanges(writes("services"))[-1].outcome == "unanswered", timeout=30)
    (record,) = proxy.exchanges(writes("services"))
    assert record.landed and record.resource_version == obj["metadata"]["resourceVersion"]


async def test_refuse_and_drop_cut_connections(
    client: KubeClient, proxy: FaultProxy, namespace: str, cluster: LocalCluster
) -> None:
    async with services_watch(client, cluster, namespace) as watch:
        await wait_for(lambda: proxy.open_exchanges(watches("services")), timeout=30)
        assert proxy.drop(watches("services")) == 1
        await wait_for(lambda: watch.ended, timeout=30)
    assert proxy.exchanges(watches("services"))[-1].outcome == "dropped"

    refusal = proxy.refuse(lambda r: r.resource == "services")
    with pytest.raises(aiohttp.ClientError):
        await client.request("GET", svc_path(namespace))
    assert refusal.hits >= 1 and proxy.exchanges()[-1].outcome == "refused"
    refusal.clear()
    assert (await client.request("GET", svc_path(namespace)))["kind"] == "ServiceList"
