"""Takeover and the controller's own machinery, in-process against the real API server.

Faults are made by stopping one of the controller's own tasks (a watch that went silent, a busy pool
worker) — exactly what a stalled connection or a slow PATCH looks like from inside — while everything the
test asserts on is what the API server holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import NoOpTracer

from controller.app import CATCH_UP_TIMEOUT, Controller
from controller.config import Settings
from controller.http import HealthState
from controller.kube.client import KubeClient
from controller.kube.informer import Informer
from controller.metrics import Metrics

pytestmark = pytest.mark.cluster

POOLS = "/apis/stablelb.io/v1alpha1/ippools"
LEASE_NS = "kube-system"  # where the controller's RBAC lets it hold a Lease


@dataclass
class Running:
    controller: Controller
    health: HealthState
    api: Any
    lb_class: str
    task: asyncio.Task[int]
    pools: list[str] = field(default_factory=list)


Start = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start(stablelb_installed: Any, controller_kubeconfig: Path) -> AsyncIterator[Start]:
    cluster = stablelb_installed
    made: list[tuple[Running, KubeClient]] = []

    async def _start(
        pools: dict[str, dict[str, Any]], *, catch_up_timeout: float = CATCH_UP_TIMEOUT, **overrides: Any
    ) -> Running:
        lb_class = overrides.pop("lb_class", None) or f"takeover.stablelb.io/c-{uuid.uuid4().hex[:8]}"
        settings = Settings(
            kubeconfig=str(controller_kubeconfig), lb_class=lb_class, handle_unclassed=False,
            **{"leader_elect": False, "workers": 2, **overrides},
        )
        names = []
        for name, spec in pools.items():
            cluster.api.post(POOLS, {"apiVersion": "stablelb.io/v1alpha1", "kind": "IPPool",
                                     "metadata": {"name": name}, "spec": spec})
            names.append(name)
        client = await KubeClient.from_kubeconfig(str(controller_kubeconfig))
        health = HealthState()
        controller = Controller(settings, client, metrics=Metrics(), tracer=NoOpTracer(), health=health,
                                catch_up_timeout=catch_up_timeout)
        task = asyncio.create_task(controller.run())
        running = Running(controller, health, cluster.api, lb_class, task, names)
        made.append((running, client))
        return running

    yield _start
    for running, client in made:
        running.controller.stopping.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running.task, 30)
        await client.close()
        for name in running.pools:
            with contextlib.suppress(Exception):
                cluster.api.delete(f"{POOLS}/{name}")


def unique_pool(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def lb_service(name: str, lb_class: str, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": lb_class,
            "ports": [{"port": 80}],
            "allocateLoadBalancerNodePorts": False,
        },
    }


def ips_of(api: Any, namespace: str, name: str) -> list[str]:
    obj = api.get(f"/api/v1/namespaces/{namespace}/services/{name}")
    return [e["ip"] for e in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]


def in_range(ips: list[str], cidr: str) -> bool:
    return bool(ips) and all(ipaddress.ip_address(ip) in ipaddress.ip_network(cidr) for ip in ips)


def stall(controller: Controller, informer: Informer) -> None:
    """The informer's watch goes silent: nothing it would deliver reaches the cache."""
    index = [controller.services, controller.pools, controller.namespaces].index(informer)
    controller._informer_tasks[index].cancel()


def resume(controller: Controller, informer: Informer) -> None:
    """A stalled watch resumes from where it stopped (if nothing restarted it meanwhile)."""
    index = [controller.services, controller.pools, controller.namespaces].index(informer)
    if controller._informer_tasks[index].done():
        controller._informer_tasks[index] = asyncio.create_task(informer.run())


async def test_events_name_their_service_by_kind_as_kubectl_asks(
    start: Start, namespace: str, wait_for: Any
) -> None:
    run = await start({unique_pool("kind"): {"addresses": ["192.168.61.0/28"]}})
    run.api.post(f"/api/v1/namespaces/{namespace}/services", lb_service("web", run.lb_class))
    await wait_for(lambda: ips_of(run.api, namespace, "web"), timeout=60)

    def allocated_events() -> list[dict[str, Any]]:
        # What `kubectl describe svc web` and `kubectl get events --field-selector ...` ask for.
        selector = "involvedObject.kind=Service,involvedObject.name=web"
        items: list[dict[str, Any]] = run.api.get(
            f"/api/v1/namespaces/{namespace}/events", query={"fieldSelector": selector}
        )["items"]
        return [e for e in items if e["reason"] == "IPAllocated"]

    (event,) = await wait_for(allocated_events, timeout=30)
    assert event["involvedObject"]["apiVersion"] == "v1"


async def test_liveness_covers_workers_and_the_event_recorder(start: Start, wait_for: Any) -> None:
    run = await start({unique_pool("live"): {"addresses": ["192.168.62.0/28"]}})
    await wait_for(lambda: run.controller.gate.is_open and run.controller._lead_tasks, timeout=60)
    assert all(r.ok for r in run.health.liveness())
    run.controller._lead_tasks[0].cancel()  # a worker died
    await wait_for(lambda: not all(r.ok for r in run.health.liveness()), timeout=10)
    (failed,) = [r for r in run.health.liveness() if not r.ok]
    assert "worker" in failed.detail


async def test_liveness_covers_the_event_recorder(start: Start, wait_for: Any) -> None:
    run = await start({unique_pool("live"): {"addresses": ["192.168.62.16/28"]}})
    await wait_for(lambda: run.controller.gate.is_open, timeout=60)
    recorder = next(t for t in asyncio.all_tasks() if t.get_name() == "event-recorder")
    recorder.cancel()
    await wait_for(lambda: not all(r.ok for r in run.health.liveness()), timeout=10)
    (failed,) = [r for r in run.health.liveness() if not r.ok]
    assert "event-recorder" in failed.detail


async def test_a_service_whose_namespace_is_not_cached_yet_gets_the_pool_its_namespace_selects(
    start: Start, cluster: Any, wait_for: Any
) -> None:
    team = uuid.uuid4().hex[:8]
    cidr = "192.168.63.0/28"
    run = await start({
        unique_pool("team"): {
            "addresses": [cidr],
            "serviceAllocation": {"namespaceSelectors": [{"matchLabels": {"team": team}}]},
        },
        # Read without its namespace's labels, the Service would take an address from here and keep it.
        unique_pool("general"): {"addresses": ["192.168.63.16/28"]},
    })
    await wait_for(lambda: run.controller.gate.is_open, timeout=60)
    stall(run.controller, run.controller.namespaces)
    ns = f"late-ns-{team}"
    run.api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                        "metadata": {"name": ns, "labels": {"team": team}}})
    run.api.post(f"/api/v1/namespaces/{ns}/services", lb_service("web", run.lb_class))
    # Reconciled while the namespace cache does not have the namespace yet.
    ips = await wait_for(lambda: ips_of(run.api, ns, "web"), timeout=60)
    assert in_range(ips, cidr), ips
    resume(run.controller, run.controller.namespaces)
    await wait_for(lambda: run.controller.namespaces.store.get(ns) is not None, timeout=30)
    await asyncio.sleep(1.0)
    assert ips_of(run.api, ns, "web") == ips


async def test_a_removed_range_stops_serving_before_the_pool_worker_runs(
    start: Start, namespace: str, wait_for: Any
) -> None:
    pool = unique_pool("shrink")
    run = await start({pool: {"addresses": ["192.168.64.0/28"]}})
    await wait_for(lambda: run.controller.gate.is_open and run.controller._lead_tasks, timeout=60)
    pool_worker = run.controller._lead_tasks[-1]  # the services' workers come first
    pool_worker.cancel()  # busy with a slow status PATCH, say: it does not get to the change
    current = run.api.get(f"{POOLS}/{pool}")
    current["spec"]["addresses"] = ["192.168.64.16/28"]
    run.api.call("PUT", f"{POOLS}/{pool}", current)
    generation = run.api.get(f"{POOLS}/{pool}")["metadata"]["generation"]

    def seen_generation() -> Any:
        return (run.controller.pools.store.get(pool) or {}).get("metadata", {}).get("generation")

    await wait_for(lambda: seen_generation() == generation, timeout=30)
    run.api.post(f"/api/v1/namespaces/{namespace}/services", lb_service("web", run.lb_class))
    ips = await wait_for(lambda: ips_of(run.api, namespace, "web"), timeout=60)
    assert in_range(ips, "192.168.64.16/28"), ips


async def test_new_leader_adopts_the_old_leaders_last_write_despite_a_stalled_watch(
    start: Start, namespace: str, wait_for: Any
) -> None:
    cidr = "192.168.65.0/28"
    lease = f"takeover-{uuid.uuid4().hex[:6]}"
    run = await start(
        {unique_pool("fresh"): {"addresses": [cidr]}},
        leader_elect=True, lease_namespace=LEASE_NS, lease_name=lease,
        lease_duration=3.0, renew_deadline=2.0, retry_period=0.5, workers=1,
    )
    api = run.api
    # The old leader holds the lease; our controller is the standby with synced caches.
    api.post(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases", {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": lease},
        "spec": {"holderIdentity": "old-leader", "leaseDurationSeconds": 3600},
    })
    # "early" is older and still waits for an address: the new leader serves it first.
    api.post(f"/api/v1/namespaces/{namespace}/services", lb_service("early", run.lb_class))
    await asyncio.sleep(1.1)  # creationTimestamp has a resolution of one second
    api.post(f"/api/v1/namespaces/{namespace}/services", lb_service("web", run.lb_class))
    key = f"{namespace}/web"
    await wait_for(lambda: run.controller.services.store.get(key) is not None, timeout=30)
    stall(run.controller, run.controller.services)
    # The old leader's last write, which the standby's stalled watch never delivers: the pool's first
    # address, the one a new leader that missed it would hand to "early".
    old_ip = str(ipaddress.ip_network(cidr)[0])
    api.call("PATCH", f"/api/v1/namespaces/{namespace}/services/web/status",
             {"status": {"loadBalancer": {"ingress": [{"ip": old_ip, "ipMode": "VIP"}]}}},
             content_type="application/merge-patch+json")
    # The old leader hands over (releases); the standby takes over.
    current = api.get(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases/{lease}")
    current["spec"] = {"holderIdentity": "", "leaseDurationSeconds": 1}
    api.call("PUT", f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases/{lease}", current)
    await wait_for(lambda: run.controller.gate.is_open, timeout=60)
    await asyncio.sleep(2.0)  # the new leader's first decisions, made on whatever it adopted
    resume(run.controller, run.controller.services)  # a stalled watch comes back eventually
    api.post(f"/api/v1/namespaces/{namespace}/services", lb_service("next", run.lb_class))
    other = await wait_for(lambda: ips_of(api, namespace, "next"), timeout=60)
    await asyncio.sleep(2.0)
    assert ips_of(api, namespace, "web") == [old_ip], "the old leader's assignment moved"
    assert old_ip not in ips_of(api, namespace, "early"), "the old leader's IP was handed out twice"
    assert ips_of(api, namespace, "early")
    assert old_ip not in other, "the old leader's IP was handed out twice"


async def test_a_process_that_wins_a_free_lease_serves_without_waiting_for_its_caches_to_catch_up(
    start: Start, stablelb_installed: Any, namespace: str, wait_for: Any
) -> None:
    """A restart or rollout: the lease is free, so the first campaign wins and the caches are listed after
    the lease write (consistent reads): they hold everything the previous leader wrote, nothing to check.
    The catch-up wait is set to an hour, so a takeover that waited on any cache would serve nothing: the
    Service already waits when the process starts, so no later event moves the Service cache forward."""
    api = stablelb_installed.api
    lb_class = f"takeover.stablelb.io/c-{uuid.uuid4().hex[:8]}"
    api.post(f"/api/v1/namespaces/{namespace}/services", lb_service("web", lb_class))
    run = await start(
        {unique_pool("restart"): {"addresses": ["192.168.66.0/28"]}},
        lb_class=lb_class, leader_elect=True, lease_namespace=LEASE_NS,
        lease_name=f"restart-{uuid.uuid4().hex[:6]}", catch_up_timeout=3600.0,
    )
    ips = await wait_for(lambda: ips_of(api, namespace, "web"), timeout=60)
    assert in_range(ips, "192.168.66.0/28"), ips
    assert all(inf.consistent_as_of() is not None for inf in run.controller._informers()[:3])
