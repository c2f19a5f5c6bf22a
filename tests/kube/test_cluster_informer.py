"""The informer against a real kube-apiserver: order of events, API-server restart, a real 410."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

import pytest

from controller.kube.backoff import Backoff
from controller.kube.client import KubeClient
from controller.kube.informer import Informer
from controller.kube.resources import NAMESPACES, SERVICES
from e2e.harness.cluster import LocalCluster
from e2e.harness.waiting import wait_for

from .tcpproxy import TcpProxy

pytestmark = pytest.mark.cluster


def svc(name: str, namespace: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"type": "ClusterIP", "ports": [{"port": 80, "protocol": "TCP"}]},
    }


class Events:
    def __init__(self, informer: Informer) -> None:
        self.seen: list[tuple[str, str, str]] = []
        informer.add_handlers(
            lambda o: self._note("add", o),
            lambda _, n: self._note("update", n),
            lambda o: self._note("delete", o),
        )

    def _note(self, kind: str, obj: dict[str, Any]) -> None:
        self.seen.append((kind, obj["metadata"]["name"], obj["metadata"]["resourceVersion"]))

    def of(self, name: str) -> list[str]:
        return [kind for kind, n, _ in self.seen if n == name]


async def fresh_list(client: KubeClient, namespace: str) -> dict[str, str]:
    items = (await client.request("GET", SERVICES.path(namespace=namespace)))["items"]
    return {f"{namespace}/{o['metadata']['name']}": o["metadata"]["resourceVersion"] for o in items}


def cached(informer: Informer) -> dict[str, str]:
    return {k: o["metadata"]["resourceVersion"] for k in informer.store
            if (o := informer.store.get(k)) is not None}


@pytest.fixture
async def admin(cluster: LocalCluster) -> AsyncIterator[KubeClient]:
    client = await KubeClient.from_kubeconfig(str(cluster.kubeconfig))
    yield client
    await client.close()


async def own_cluster(**kwargs: Any) -> LocalCluster:
    return await asyncio.to_thread(LocalCluster.start, **kwargs)


async def create_namespace(client: KubeClient) -> str:
    name = f"kube-{uuid.uuid4().hex[:8]}"
    await client.request("POST", NAMESPACES.path(), body={"metadata": {"name": name}})
    return name


async def test_informer_sees_create_update_delete_in_order(admin: KubeClient, namespace: str) -> None:
    informer = Informer(admin, SERVICES, namespace=namespace)
    events = Events(informer)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.wait_synced(), 30)
        assert informer.store.keys() == []
        path = SERVICES.path(namespace=namespace)
        await admin.request("POST", path, body=svc("a", namespace))
        await admin.request("PATCH", SERVICES.path(namespace=namespace, name="a"),
                            body={"metadata": {"labels": {"step": "2"}}},
                            content_type="application/merge-patch+json")
        await admin.request("DELETE", SERVICES.path(namespace=namespace, name="a"))
        await wait_for(lambda: "delete" in events.of("a"), timeout=30, describe=lambda: str(events.seen))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert events.of("a") == ["add", "update", "delete"]
    rvs = [int(rv) for _, n, rv in events.seen if n == "a"]
    assert rvs == sorted(rvs)
    assert informer.store.get(f"{namespace}/a") is None


async def test_cache_converges_to_fresh_list_after_apiserver_restart() -> None:
    own = await own_cluster(name="kube-restart")
    client = await KubeClient.from_kubeconfig(str(own.kubeconfig))
    restarts: list[str] = []
    try:
        ns = await create_namespace(client)
        for i in range(5):
            await client.request("POST", SERVICES.path(namespace=ns), body=svc(f"s{i}", ns))
        informer = Informer(client, SERVICES, namespace=ns, on_restart=restarts.append,
                            backoff=Backoff(initial=0.2, cap=2.0))
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(informer.wait_synced(), 30)
            await asyncio.to_thread(own.kill_apiserver)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(own.restart_apiserver)
            # Writes straight after the restart, racing the informer's reconnect.
            await client.request("DELETE", SERVICES.path(namespace=ns, name="s0"))
            await client.request("PATCH", SERVICES.path(namespace=ns, name="s1"),
                                 body={"metadata": {"labels": {"after": "restart"}}},
                                 content_type="application/merge-patch+json")
            await client.request("POST", SERVICES.path(namespace=ns), body=svc("s9", ns))
            expected = await fresh_list(client, ns)

            async def converged() -> bool:
                return cached(informer) == await fresh_list(client, ns)

            await wait_for(converged, timeout=60,
                           describe=lambda: f"cache={cached(informer)} list={expected} restarts={restarts}")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert sorted(cached(informer)) == sorted(expected)
        assert restarts, "the watch must have been restarted"
        s1 = informer.store.get(f"{ns}/s1")
        assert s1 is not None and s1["metadata"]["labels"] == {"after": "restart"}
    finally:
        await client.close()
        await asyncio.to_thread(own.stop)


async def test_real_410_relists_without_missed_or_phantom_objects() -> None:
    own = await own_cluster(name="kube-410", watch_cache=False)
    admin = await KubeClient.from_kubeconfig(str(own.kubeconfig))
    target = urlparse(own.server)
    proxy = TcpProxy("127.0.0.1", target.port or 443)
    await proxy.start()
    watched = KubeClient.for_host(f"https://127.0.0.1:{proxy.port}", token=own.token, verify_ssl=False)
    restarts: list[str] = []
    try:
        ns = await create_namespace(admin)
        for name in ("a", "b", "c"):
            await admin.request("POST", SERVICES.path(namespace=ns), body=svc(name, ns))
        informer = Informer(watched, SERVICES, namespace=ns, on_restart=restarts.append,
                            backoff=Backoff(initial=0.2, cap=1.0))
        events = Events(informer)
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(informer.wait_synced(), 30)
            await wait_for(lambda: informer.last_resource_version != "", timeout=10)
            await asyncio.sleep(0.5)  # let the watch get established
            proxy.block()
            # While the informer is cut off: a delete, an update, a create — then history is compacted.
            await admin.request("DELETE", SERVICES.path(namespace=ns, name="a"))
            await admin.request("PATCH", SERVICES.path(namespace=ns, name="b"),
                                body={"metadata": {"labels": {"changed": "yes"}}},
                                content_type="application/merge-patch+json")
            await admin.request("POST", SERVICES.path(namespace=ns), body=svc("d", ns))
            # More writes elsewhere so the compaction revision is past every one of ours.
            await create_namespace(admin)
            await asyncio.to_thread(own.compact_etcd)
            proxy.unblock()
            expected = await fresh_list(admin, ns)
            await wait_for(lambda: cached(informer) == expected, timeout=60,
                           describe=lambda: f"cache={cached(informer)} list={expected} restarts={restarts}")
            await wait_for(lambda: "expired" in restarts, timeout=30, describe=lambda: str(restarts))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert events.of("a") == ["add", "delete"]
        assert events.of("b") == ["add", "update"]
        assert events.of("c") == ["add"]
        assert events.of("d") == ["add"]
        b = informer.store.get(f"{ns}/b")
        assert b is not None and b["metadata"]["labels"] == {"changed": "yes"}
    finally:
        await watched.close()
        await admin.close()
        await proxy.stop()
        await asyncio.to_thread(own.stop)
