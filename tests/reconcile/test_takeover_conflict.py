"""A 409 on an assignment no write ever confirmed: the fresh status decides, our unconfirmed record goes.

Against the real API server: the "old leader" is an admin client writing the Service's status behind the
reconciler's cache, exactly what a new leader with a lagging watch would not have seen.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.trace import NoOpTracer

from controller.app import slim_service
from controller.ipam import Allocator, PoolSpec, ServiceKey
from controller.kube.client import KubeClient
from controller.kube.events import EventRecorder
from controller.kube.resources import SERVICES
from controller.kube.store import Store
from controller.metrics import Metrics
from controller.reconcile.leadership import WriteGate
from controller.reconcile.services import ServicePolicy, ServiceReconciler
from controller.reconcile.writes import Requeue
from e2e.harness.cluster import LocalCluster

pytestmark = pytest.mark.cluster

POOL = ("192.168.77.0/28",)


@pytest.fixture
async def admin(cluster: LocalCluster) -> AsyncIterator[KubeClient]:
    client = await KubeClient.from_kubeconfig(str(cluster.kubeconfig))
    yield client
    await client.close()


def ingress_ips(obj: dict[str, Any]) -> list[str]:
    return [e["ip"] for e in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]


async def test_409_on_an_unconfirmed_assignment_keeps_the_ip_the_old_leader_wrote(
    admin: KubeClient, namespace: str
) -> None:
    lb_class = f"conflict.stablelb.io/c-{uuid.uuid4().hex[:8]}"
    created = await admin.request(
        "POST",
        SERVICES.path(namespace=namespace),
        body={
            "metadata": {"name": "web"},
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": lb_class,
                "ports": [{"port": 80}],
                "allocateLoadBalancerNodePorts": False,
            },
        },
    )
    services, namespaces = Store(), Store()
    services.put(slim_service(created))  # the new leader's cache: no status yet
    namespaces.put({"metadata": {"name": namespace}})
    allocator = Allocator()
    allocator.set_pools([PoolSpec("p", POOL)])
    gate = WriteGate()
    gate.open()
    reconciler = ServiceReconciler(
        client=admin,
        services=services,
        namespaces=namespaces,
        allocator=allocator,
        recorder=EventRecorder(admin),
        metrics=Metrics(),
        tracer=NoOpTracer(),
        gate=gate,
        policy=ServicePolicy(lb_class, handle_unclassed=False, reassign_orphans=False),
        enqueue_service=lambda key: None,
        refresh_pool=lambda name: None,
    )
    # The old leader's last write, which the new leader's watch has not delivered yet.
    status_path = SERVICES.path(namespace, "web", "status")
    written = await admin.request(
        "PATCH", status_path, body={"status": {"loadBalancer": {"ingress": [{"ip": "192.168.77.9"}]}}},
        content_type="application/merge-patch+json",
    )
    key = ServiceKey(namespace, "web")

    with pytest.raises(Requeue):
        await reconciler.reconcile(f"{namespace}/web")  # decides from the stale cache: 409
    services.put(slim_service(written))  # the watch catches up
    await reconciler.reconcile(f"{namespace}/web")

    fresh = await admin.request("GET", SERVICES.path(namespace, "web"))
    assert ingress_ips(fresh) == ["192.168.77.9"], "the IP the old leader assigned moved"
    assert allocator.assignment(key) == ("192.168.77.9",)
