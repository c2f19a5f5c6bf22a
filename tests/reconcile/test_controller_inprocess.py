"""The controller in-process against the real API server, with an in-memory span exporter injected."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controller.app import Controller
from controller.config import Settings
from controller.http import HealthState
from controller.kube.client import KubeClient
from controller.metrics import Metrics

pytestmark = pytest.mark.cluster


@pytest.fixture
async def running(
    stablelb_installed: Any, controller_kubeconfig: Path, namespace: str
) -> AsyncIterator[tuple[Controller, InMemorySpanExporter, Any, str]]:
    cluster = stablelb_installed
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    lb_class = f"inproc.stablelb.io/c-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kubeconfig=str(controller_kubeconfig),
        lb_class=lb_class,
        handle_unclassed=False,
        leader_elect=False,
        workers=2,
    )
    client = await KubeClient.from_kubeconfig(str(controller_kubeconfig))
    controller = Controller(
        settings, client, metrics=Metrics(), tracer=provider.get_tracer("test"), health=HealthState()
    )
    pool = f"{namespace}-p"[:63]
    cluster.api.post(
        "/apis/stablelb.io/v1alpha1/ippools",
        {
            "apiVersion": "stablelb.io/v1alpha1",
            "kind": "IPPool",
            "metadata": {"name": pool},
            "spec": {"addresses": ["192.168.60.0/24"]},
        },
    )
    task = asyncio.create_task(controller.run())
    try:
        yield controller, exporter, cluster, lb_class
    finally:
        controller.stopping.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)
        await client.close()
        cluster.api.delete(f"/apis/stablelb.io/v1alpha1/ippools/{pool}")


async def test_reconcile_spans_links_and_no_write_when_unchanged(
    running: tuple[Controller, InMemorySpanExporter, Any, str], namespace: str, wait_for: Any
) -> None:
    controller, exporter, cluster, lb_class = running
    # After the start-up pass, so that the Service's reconcile is caused by its watch event.
    await wait_for(lambda: controller.gate.is_open, timeout=30)
    cluster.api.post(
        f"/api/v1/namespaces/{namespace}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": lb_class,
                "ports": [{"port": 80}],
                "allocateLoadBalancerNodePorts": False,
            },
        },
    )

    def ips() -> list[str]:
        obj = cluster.api.get(f"/api/v1/namespaces/{namespace}/services/web")
        return [e["ip"] for e in (obj.get("status", {}).get("loadBalancer") or {}).get("ingress") or []]

    (ip,) = await wait_for(ips, timeout=60)

    def root() -> Any:
        for span in exporter.get_finished_spans():
            attrs = span.attributes or {}
            if (
                span.name == "reconcile Service"
                and attrs.get("stablelb.ips") == ip
                and attrs.get("stablelb.wrote")
            ):
                return span
        return None

    span = await wait_for(root, timeout=30)
    attrs = dict(span.attributes or {})
    assert attrs["k8s.namespace.name"] == namespace
    assert attrs["k8s.service.name"] == "web"
    assert attrs["stablelb.result"] == "Allocated"
    assert "stablelb.queue_wait_ms" in attrs and "stablelb.requeues" in attrs
    assert attrs["stablelb.pool"].endswith("-p")
    children = {
        s.name
        for s in exporter.get_finished_spans()
        if s.parent is not None and s.parent.span_id == span.context.span_id
    }
    assert {"allocate", "status write"} <= children
    linked = {link.context.span_id for link in span.links}
    watch_spans = {
        s.context.span_id for s in exporter.get_finished_spans() if s.name == "watch ADDED Service"
    }
    assert linked & watch_spans, "the reconcile is not linked to the watch event that caused it"

    # Level-based and a fixed point: running it again on the unchanged Service writes nothing.
    await wait_for(
        lambda: controller.services.store.get(f"{namespace}/web") is not None and ips() == [ip], timeout=30
    )
    await asyncio.sleep(0.5)  # let our own status write come back through the watch
    assert controller.service_reconciler is not None
    outcome = await controller.service_reconciler.reconcile(f"{namespace}/web")
    assert outcome.wrote is False
    assert b'stablelb_allocations_total{result="Allocated"}' in controller.metrics.render()


def create_lb_service(cluster: Any, namespace: str, name: str, lb_class: str) -> None:
    cluster.api.post(f"/api/v1/namespaces/{namespace}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": lb_class, "ports": [{"port": 80}],
                 "allocateLoadBalancerNodePorts": False},
    })


def reconciles_of(exporter: InMemorySpanExporter, name: str) -> int:
    """Reconciles of Service ``name`` so far (one root span each)."""
    return sum(
        1 for s in exporter.get_finished_spans()
        if s.name == "reconcile Service" and (s.attributes or {}).get("k8s.service.name") == name
    )


async def test_our_own_status_write_coming_back_is_not_reconciled_other_changes_are(
    running: tuple[Controller, InMemorySpanExporter, Any, str], namespace: str, wait_for: Any
) -> None:
    controller, exporter, cluster, lb_class = running
    await wait_for(lambda: controller.gate.is_open, timeout=30)
    path = f"/api/v1/namespaces/{namespace}/services/echo"
    create_lb_service(cluster, namespace, "echo", lb_class)

    def reconciles() -> int:
        return reconciles_of(exporter, "echo")

    written = await wait_for(
        lambda: (cluster.api.get(path).get("status") or {}).get("loadBalancer", {}).get("ingress"), timeout=60
    )
    served_rv = cluster.api.get(path)["metadata"]["resourceVersion"]
    # The cache has our write back (it moves only through the watch): that event did not queue a reconcile.
    await wait_for(
        lambda: (controller.services.store.get(f"{namespace}/echo") or {}).get("metadata", {})
        .get("resourceVersion") == served_rv,
        timeout=30,
    )
    await asyncio.sleep(0.5)
    assert reconciles() == 1, "the echo of our own status write was reconciled again"
    # Anyone else's change is: here a label, then a status edit that drops our address.
    obj = cluster.api.get(path)
    obj["metadata"].setdefault("labels", {})["touched"] = "yes"
    cluster.api.call("PUT", path, obj)
    await wait_for(lambda: reconciles() == 2, timeout=30)
    cluster.api.call("PATCH", f"{path}/status", {"status": {"loadBalancer": {"ingress": []}}},
                     content_type="application/merge-patch+json")
    restored = await wait_for(
        lambda: (cluster.api.get(path).get("status") or {}).get("loadBalancer", {}).get("ingress"), timeout=60
    )
    assert restored == written


@pytest.mark.parametrize("foreign_change", [False, True])
async def test_an_echo_that_comes_before_the_write_is_answered_is_still_ours_alone(
    running: tuple[Controller, InMemorySpanExporter, Any, str], namespace: str, wait_for: Any,
    foreign_change: bool,
) -> None:
    """The watch may deliver our write before its answer arrives. Held back until the cache has it: the
    echo alone queues nothing; a label changed by someone else meanwhile is reconciled afterwards."""
    controller, exporter, cluster, lb_class = running
    await wait_for(lambda: controller.gate.is_open, timeout=30)
    path = f"/api/v1/namespaces/{namespace}/services/late"
    key = f"{namespace}/late"
    real_request = controller.client.request

    async def answer_after_the_watch(method: str, url: str, **kwargs: Any) -> Any:
        answer = await real_request(method, url, **kwargs)
        if method == "PATCH" and url == f"{path}/status":
            if foreign_change:
                obj = await asyncio.to_thread(cluster.api.get, path)
                obj["metadata"].setdefault("labels", {})["touched"] = "yes"
                await asyncio.to_thread(cluster.api.call, "PUT", path, obj)

            def cached() -> dict[str, Any]:
                return (controller.services.store.get(key) or {}).get("metadata", {})  # type: ignore[no-any-return]

            if foreign_change:  # the echo, then the label change: both while the write is in flight
                await wait_for(lambda: "touched" in cached().get("labels", {}), timeout=30)
            else:
                rv = answer["metadata"]["resourceVersion"]
                await wait_for(lambda: cached().get("resourceVersion") == rv, timeout=30)
        return answer

    controller.client.request = answer_after_the_watch  # type: ignore[method-assign]
    create_lb_service(cluster, namespace, "late", lb_class)

    def reconciles() -> int:
        return reconciles_of(exporter, "late")

    await wait_for(lambda: reconciles() >= 1, timeout=60)
    await asyncio.sleep(1.0)
    assert reconciles() == (2 if foreign_change else 1)
    assert (cluster.api.get(path).get("status") or {}).get("loadBalancer", {}).get("ingress")
