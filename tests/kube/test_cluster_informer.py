"""The informer against a real kube-apiserver: order of events, API-server restart, a real 410, watch-list,
field selectors (and the fallback when the server refuses one), LIST pages with an expired continue token."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

import pytest

from controller.app import LB_FIELD_SELECTOR, is_load_balancer
from controller.kube.backoff import Backoff
from controller.kube.client import ApiError, KubeClient, QueryValue
from controller.kube.informer import Informer, ListSettings
from controller.kube.resources import NAMESPACES, SERVICES, Resource
from e2e.harness.cluster import LocalCluster
from e2e.harness.manifests import install
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


def lb_svc(name: str, namespace: str, lb_class: str | None = None) -> dict[str, Any]:
    body = svc(name, namespace)
    body["spec"].update(type="LoadBalancer", allocateLoadBalancerNodePorts=False)
    if lb_class:
        body["spec"]["loadBalancerClass"] = lb_class
    return body


TO_CLUSTER_IP = {"spec": {"type": "ClusterIP", "allocateLoadBalancerNodePorts": None,
                          "loadBalancerClass": None, "externalTrafficPolicy": None}}
TO_LOAD_BALANCER = {"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False}}


class RecordingClient(KubeClient):
    """Records the query of every LIST and WATCH; `after_list` runs after each LIST answer."""

    lists: list[dict[str, QueryValue]]
    watches: list[dict[str, QueryValue]]
    after_list: Any = None

    async def request(self, method: str, path: str, *, query: Any = None, **kwargs: Any) -> dict[str, Any]:
        is_list = method == "GET" and query is not None and "watch" not in query
        if is_list:
            self.lists.append(dict(query))
        result = await super().request(method, path, query=query, **kwargs)
        if is_list and self.after_list is not None:
            await self.after_list(dict(query))
        return result

    def stream_lines(self, path: str, *, query: Any = None, read_timeout: float) -> Any:
        self.watches.append(dict(query or {}))
        return super().stream_lines(path, query=query, read_timeout=read_timeout)


def recording(cluster: LocalCluster, server: str | None = None) -> RecordingClient:
    client = RecordingClient.for_host(server or cluster.server, token=cluster.token, verify_ssl=False)
    client.lists, client.watches = [], []
    return client


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
    watched = recording(own, f"https://127.0.0.1:{proxy.port}")
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
        # As client-go: after the watch's 410 the relist asks for data at least as fresh as the last
        # resourceVersion seen (that LIST is still answerable), not straight for a quorum read.
        initial = [q for q in watched.watches if q.get("sendInitialEvents")]
        assert watched.lists == [] and len(initial) >= 2, "watch-list, then watch-list again after the 410"
        assert initial[1]["resourceVersionMatch"] == "NotOlderThan"
        assert initial[1]["resourceVersion"] not in (None, "", "0")
    finally:
        await watched.close()
        await admin.close()
        await proxy.stop()
        await asyncio.to_thread(own.stop)


async def test_watch_list_streams_the_initial_state_then_keeps_watching(
    cluster: LocalCluster, namespace: str
) -> None:
    client = recording(cluster)
    try:
        for name in ("a", "b", "c"):
            await client.request("POST", SERVICES.path(namespace=namespace), body=svc(name, namespace))
        created_rv = int((await fresh_list(client, namespace))[f"{namespace}/c"])
        client.lists.clear()
        informer = Informer(client, SERVICES, namespace=namespace)
        events = Events(informer)
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(informer.wait_synced(), 30)
            assert sorted(informer.store.keys()) == [f"{namespace}/{n}" for n in ("a", "b", "c")]
            await client.request("POST", SERVICES.path(namespace=namespace), body=svc("d", namespace))
            await wait_for(lambda: "add" in events.of("d"), timeout=30, describe=lambda: str(events.seen))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert informer.uses_watch_list
        assert client.lists == [], "the initial state came from the watch, not from a LIST"
        assert len(client.watches) == 1, "the same stream carried on as the watch"
        first = client.watches[0]
        assert first["sendInitialEvents"] is True and first["resourceVersionMatch"] == "NotOlderThan"
        # Synced at the initial-events-end bookmark, whose resourceVersion is at least every object's.
        assert int(informer.last_resource_version) >= created_rv
        assert [kind for kind, _, _ in events.seen] == ["add"] * 4
    finally:
        await client.close()


async def test_field_selector_type_change_away_and_back(cluster: LocalCluster, namespace: str) -> None:
    client = recording(cluster)
    try:
        path = SERVICES.path(namespace=namespace)
        await client.request("POST", path, body=lb_svc("lb", namespace))
        await client.request("POST", path, body=svc("plain", namespace))
        informer = Informer(client, SERVICES, namespace=namespace, field_selector=LB_FIELD_SELECTOR,
                            keep=is_load_balancer)
        events = Events(informer)
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(informer.wait_synced(), 30)
            assert informer.store.keys() == [f"{namespace}/lb"]
            merge = "application/merge-patch+json"
            lb = SERVICES.path(namespace=namespace, name="lb")
            await client.request("PATCH", lb, body=TO_CLUSTER_IP, content_type=merge)
            await wait_for(lambda: events.of("lb") == ["add", "delete"], timeout=30,
                           describe=lambda: str(events.seen))
            assert informer.store.get(f"{namespace}/lb") is None
            # Still there for the API server: leaving the selection is not a deletion.
            still = await client.request("GET", lb)
            assert still["spec"]["type"] == "ClusterIP"
            await client.request("PATCH", lb, body=TO_LOAD_BALANCER, content_type=merge)
            await wait_for(lambda: events.of("lb") == ["add", "delete", "add"], timeout=30,
                           describe=lambda: str(events.seen))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert informer.field_selector == LB_FIELD_SELECTOR, "the server supports it: it filters"
        assert all(q.get("fieldSelector") == LB_FIELD_SELECTOR for q in client.watches)
        assert events.of("plain") == []
    finally:
        await client.close()


async def test_unsupported_field_selector_falls_back_to_filtering_in_the_informer(
    cluster: LocalCluster, namespace: str
) -> None:
    # The API server does not index spec.loadBalancerClass: a real 400 "field label not supported".
    wanted = "example.com/wanted"
    client = recording(cluster)
    try:
        path = SERVICES.path(namespace=namespace)
        await client.request("POST", path, body=lb_svc("classed", namespace, lb_class=wanted))
        await client.request("POST", path, body=lb_svc("other", namespace))
        informer = Informer(
            client, SERVICES, namespace=namespace, field_selector=f"spec.loadBalancerClass={wanted}",
            keep=lambda o: (o.get("spec") or {}).get("loadBalancerClass") == wanted,
        )
        events = Events(informer)
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(informer.wait_synced(), 30)
            assert informer.store.keys() == [f"{namespace}/classed"]
            merge = "application/merge-patch+json"
            await client.request("PATCH", SERVICES.path(namespace=namespace, name="classed"),
                                 body=TO_CLUSTER_IP, content_type=merge)
            await wait_for(lambda: events.of("classed") == ["add", "delete"], timeout=30,
                           describe=lambda: str(events.seen))
            await client.request("POST", path, body=lb_svc("late", namespace, lb_class=wanted))
            await wait_for(lambda: events.of("late") == ["add"], timeout=30,
                           describe=lambda: str(events.seen))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert informer.field_selector is None, "refused by the server, so dropped"
        assert client.watches[-1].get("fieldSelector") is None
        assert events.of("other") == []
        assert informer.store.keys() == [f"{namespace}/late"]
    finally:
        await client.close()


async def test_expired_continue_token_falls_back_to_one_unpaginated_list() -> None:
    # Without the watch cache the LIST pages come from etcd, and compacting etcd between two pages makes the
    # continue token expire for real (410).
    own = await own_cluster(name="kube-continue", watch_cache=False)
    admin = await KubeClient.from_kubeconfig(str(own.kubeconfig))
    client = recording(own)
    try:
        ns = await create_namespace(admin)
        for i in range(7):
            await admin.request("POST", SERVICES.path(namespace=ns), body=svc(f"s{i}", ns))

        async def compact_after_first_page(query: dict[str, QueryValue]) -> None:
            if len(client.lists) != 1:
                return
            # Between page 1 and page 2: one object goes, one comes, then history is compacted.
            await admin.request("DELETE", SERVICES.path(namespace=ns, name="s0"))
            await admin.request("POST", SERVICES.path(namespace=ns), body=svc("late", ns))
            await create_namespace(admin)
            await asyncio.to_thread(own.compact_etcd)

        client.after_list = compact_after_first_page
        informer = Informer(client, SERVICES, namespace=ns,
                            settings=ListSettings(watch_list=False, page_size=3))
        restarts: list[str] = []
        informer._on_restart = restarts.append
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(informer.wait_synced(), 60)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        first, second, fallback = client.lists
        assert first["limit"] == 3 and "continue" not in first
        assert second.get("continue")
        # client-go's pager: one LIST, no limit, no continue, no resourceVersion (a consistent read).
        assert "limit" not in fallback and "continue" not in fallback and "resourceVersion" not in fallback
        assert cached(informer) == await fresh_list(admin, ns)
        assert f"{ns}/late" in cached(informer) and f"{ns}/s0" not in cached(informer)
        assert restarts == [], "recovered inside the same list, without a relist from scratch"
    finally:
        await client.close()
        await admin.close()
        await asyncio.to_thread(own.stop)


CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def widget_crd(group: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Cluster",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
            }],
        },
    }


async def test_an_optional_resource_not_served_syncs_empty_and_is_listed_once_its_crd_exists(
    admin: KubeClient, cluster: LocalCluster
) -> None:
    """An upgrade that did not apply a new CRD (helm upgrade never installs CRDs): the optional cache is
    synced and empty, not stuck waiting; once the CRD is applied its objects arrive without a restart."""
    group = f"opt-{uuid.uuid4().hex[:8]}.stablelb.io"
    widgets = Resource(group, "v1", "widgets", "Widget", namespaced=False)
    informer = Informer(admin, widgets, optional=True, backoff=Backoff(initial=0.1, cap=0.5))
    events = Events(informer)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.wait_synced(), 30)
        assert informer.absent and informer.store.keys() == []
        await asyncio.to_thread(install, cluster.api, [widget_crd(group)])
        await admin.request("POST", widgets.path(), body={
            "apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w1"},
        })
        await wait_for(lambda: events.of("w1") == ["add"], timeout=60, describe=lambda: str(events.seen))
        assert not informer.absent
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(ApiError):
            await admin.request("DELETE", f"{CRDS}/widgets.{group}")


async def test_a_required_resource_not_served_never_counts_as_synced(admin: KubeClient) -> None:
    group = f"req-{uuid.uuid4().hex[:8]}.stablelb.io"
    restarts: list[str] = []
    informer = Informer(admin, Resource(group, "v1", "widgets", "Widget", namespaced=False),
                        backoff=Backoff(initial=0.1, cap=0.2), on_restart=restarts.append)
    task = asyncio.create_task(informer.run())
    try:
        await wait_for(lambda: len(restarts) >= 3, timeout=60, describe=lambda: str(restarts))
        assert not informer.has_synced() and not informer.absent
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
