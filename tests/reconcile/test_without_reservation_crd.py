"""An upgrade that did not apply the IPReservation CRD (`helm upgrade` never installs CRDs): the controller
must still lead and serve, with no reservations, on a real API server that serves only the IPPool CRD."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from controller.app import Controller
from controller.config import Settings
from controller.http import HealthState
from controller.kube.client import KubeClient
from controller.kube.resources import IPPOOLS, NAMESPACES, SERVICES
from controller.metrics import Metrics
from e2e.harness.cluster import LocalCluster
from e2e.harness.manifests import MANIFESTS, install, load_documents
from e2e.harness.waiting import wait_for

pytestmark = pytest.mark.cluster

async def test_a_controller_without_the_reservation_crd_still_leads_and_serves() -> None:
    cluster = await asyncio.to_thread(LocalCluster.start, name="no-iprs", dual_stack=False)
    client = await KubeClient.from_kubeconfig(str(cluster.kubeconfig))
    task: asyncio.Task[Any] | None = None
    controller: Controller | None = None
    try:
        crds = load_documents(MANIFESTS / "crd-ippools.yaml")
        await asyncio.to_thread(install, cluster.api, crds)
        await client.request("POST", IPPOOLS.path(), body={
            "apiVersion": "stablelb.io/v1alpha1", "kind": "IPPool",
            "metadata": {"name": "default"}, "spec": {"addresses": ["192.168.10.0/30"]},
        })
        await client.request("POST", NAMESPACES.path(), body={"metadata": {"name": "app"}})
        await client.request("POST", SERVICES.path(namespace="app"), body={
            "metadata": {"name": "web"},
            "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False,
                     "ports": [{"port": 80, "protocol": "TCP"}]},
        })
        settings = Settings(kubeconfig=str(cluster.kubeconfig), handle_unclassed=True, leader_elect=False)
        health = HealthState()
        controller = Controller(settings, client, metrics=Metrics(),
                                tracer=TracerProvider().get_tracer("test"), health=health)
        task = asyncio.create_task(controller.run())

        async def served() -> list[str]:
            svc = await client.request("GET", SERVICES.path(namespace="app", name="web"))
            return [i["ip"] for i in svc.get("status", {}).get("loadBalancer", {}).get("ingress", [])]

        assert await wait_for(served, timeout=90, interval=0.5) == ["192.168.10.0"]
        assert controller.reservations.absent and controller.reservations.store.keys() == []
    finally:
        if controller is not None and task is not None:
            controller.stopping.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 20)
        await client.close()
        await asyncio.to_thread(cluster.stop, check=False)
