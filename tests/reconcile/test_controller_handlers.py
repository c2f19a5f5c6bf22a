"""The controller's informer handlers while leading: what a watch event enqueues (no API server needed)."""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import NoOpTracer

from controller.app import Controller
from controller.config import Settings
from controller.http import HealthState
from controller.kube.client import KubeClient
from controller.metrics import Metrics

LB_CLASS = "handlers.stablelb.io/lb"


def service(namespace: str, name: str, lb_class: str = LB_CLASS) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name, "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": lb_class},
    }


async def test_a_namespace_added_while_leading_enqueues_its_services() -> None:
    client = KubeClient.for_host("http://127.0.0.1:9")  # never contacted
    try:
        controller = Controller(
            Settings(lb_class=LB_CLASS, handle_unclassed=False, leader_elect=False),
            client, metrics=Metrics(), tracer=NoOpTracer(), health=HealthState(),
        )
        for obj in (service("late", "a"), service("late", "b"), service("late", "other", "someone.else/lb"),
                    service("elsewhere", "c")):
            controller.services.store.put(obj)
        controller.service_reconciler = object()  # type: ignore[assignment]  # leading: a reconciler exists
        controller.gate.open()
        namespace = {"metadata": {"name": "late", "uid": "u", "resourceVersion": "7", "labels": {"t": "x"}}}
        # What the namespaces informer does when the Namespace reaches the cache.
        controller.namespaces.store.put(namespace)
        for handlers in controller.namespaces._handlers:
            if handlers.on_add is not None:
                handlers.on_add(namespace)
        queued = set()
        while len(controller.service_queue):
            key = await controller.service_queue.get()
            queued.add(key)
            controller.service_queue.done(key)
        assert queued == {"late/a", "late/b"}
    finally:
        await client.close()
