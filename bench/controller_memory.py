"""Controller memory per LoadBalancer Service, without an API server: RSS of the caches it builds.

Imports what `python -m controller` imports, then feeds N synthetic LoadBalancer Services (with an ingress
IP and our condition, as after assignment) through the Service informer's own watch-list path (field
selector twin, slim transform, store, namespace index), 100 slim Namespaces, one IPPool, and adopts every
claim with the real ServiceReconciler and Allocator. No HTTP: the client is a stub. Prints VmRSS after
imports, after the cache and after adoption. Calibrate against bench/controller.py (a real process adds a
few MiB of runtime buffers).

Usage: .venv/bin/python bench/controller_memory.py --services 10000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import controller.__main__  # noqa: F401  (the process's imports are part of its memory)
from controller.app import LB_FIELD_SELECTOR, is_load_balancer, slim_namespace, slim_service
from controller.ipam import Allocator
from controller.kube.events import EventRecorder
from controller.kube.informer import INITIAL_EVENTS_END, Informer
from controller.kube.resources import SERVICES
from controller.kube.store import Store
from controller.metrics import Metrics
from controller.reconcile.leadership import WriteGate
from controller.reconcile.pools import PoolReconciler
from controller.reconcile.services import ServicePolicy, ServiceReconciler
from controller.telemetry import get_tracer

START = ipaddress.IPv4Address("10.200.0.0")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmRSS")


def service(i: int, namespace: str) -> dict[str, Any]:
    name, ip, ts = f"svc-{i:05d}", str(START + i), "2026-12-01T00:00:00Z"
    cluster_ip = f"10.96.{i // 250 % 256}.{i % 250 + 1}"
    return {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {
            "name": name, "namespace": namespace, "uid": f"6f1c2a4e-0000-4000-8000-{i:012d}",
            "resourceVersion": str(1000 + i), "creationTimestamp": ts,
            "managedFields": [
                {"manager": "bench", "operation": "Update", "apiVersion": "v1", "time": ts,
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:type": {}, "f:ports": {}}}},
                {"manager": "stablelb-controller", "operation": "Update", "apiVersion": "v1", "time": ts,
                 "fieldsType": "FieldsV1", "subresource": "status",
                 "fieldsV1": {"f:status": {"f:loadBalancer": {"f:ingress": {}}}}},
            ],
        },
        "spec": {
            "type": "LoadBalancer", "allocateLoadBalancerNodePorts": False, "selector": {"app": name},
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 80}],
            "clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None", "externalTrafficPolicy": "Cluster",
            "internalTrafficPolicy": "Cluster",
        },
        "status": {
            "loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]},
            "conditions": [{"type": "stablelb.io/IPAllocated", "status": "True", "reason": "Allocated",
                            "message": f"assigned {ip}", "lastTransitionTime": ts, "observedGeneration": 1}],
        },
    }


class StubClient:
    async def request(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {}


@dataclass
class Built:
    """What `python -m controller` holds once it leads: caches filled, every claim adopted."""

    informer: Informer
    reconciler: ServiceReconciler
    recorder: EventRecorder
    rss_base: float
    rss_cached: float
    rss_adopted: float


def build(n: int, namespaces: int, *, spare: int = 0, client: Any = None) -> Built:
    """N assigned Services through the informer's watch-list path, adopted; the pool has `spare` more IPs."""
    gc.collect()
    base = rss_mib()
    client = client if client is not None else StubClient()
    informer = Informer(client, SERVICES, transform=slim_service, field_selector=LB_FIELD_SELECTOR,
                        keep=is_load_balancer)
    informer.store.add_index("namespace", lambda o: [o["metadata"].get("namespace", "")])
    informer._listing = set()  # as during a watch-list's initial events
    for i in range(n):
        line = orjson.dumps({"type": "ADDED", "object": service(i, f"bench-{i % namespaces:03d}")})
        informer._handle_event(orjson.loads(line))
    end = {"metadata": {"resourceVersion": str(2000 + n), "annotations": {INITIAL_EVENTS_END: "true"}}}
    informer._handle_event({"type": "BOOKMARK", "object": end})
    ns_store = Store()
    for k in range(namespaces):
        name = f"bench-{k:03d}"
        labels = {"kubernetes.io/metadata.name": name}
        meta = {"name": name, "uid": f"u{k}", "resourceVersion": "1", "labels": labels}
        ns_store.put(slim_namespace({"metadata": meta}))
    cached = rss_mib()
    pools = Store()
    pools.put({"metadata": {"name": "p", "uid": "p", "generation": 1, "resourceVersion": "1"},
               "spec": {"addresses": [f"{START}-{START + n + spare}"]}})
    allocator = Allocator(reclaim_window=0)
    gate = WriteGate()
    gate.open()
    recorder = EventRecorder(client)
    tracer = get_tracer()
    PoolReconciler(client=client, pools=pools, allocator=allocator, recorder=recorder, metrics=Metrics(),
                   tracer=tracer, gate=gate, enqueue_service=lambda k: None).apply_pools()
    reconciler = ServiceReconciler(
        client=client, services=informer.store, namespaces=ns_store, allocator=allocator, recorder=recorder,
        metrics=Metrics(), tracer=tracer, gate=gate, policy=ServicePolicy("stablelb.io/lb", True, True),
        enqueue_service=lambda k: None, refresh_pool=lambda p: None,
    )
    reconciler.adopt_all()
    return Built(informer, reconciler, recorder, base, cached, rss_mib())


async def measure(n: int, namespaces: int) -> None:
    built = build(n, namespaces)
    base, cached, adopted = built.rss_base, built.rss_cached, built.rss_adopted
    print(f"N = {n}: RSS after imports {base:.0f} MiB; cache +{cached - base:.1f} MiB "
          f"({(cached - base) * 1024 / n:.1f} KiB/Service); allocator +{adopted - cached:.1f} MiB; "
          f"total {adopted:.0f} MiB")


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--namespaces", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(measure(args.services, args.namespaces))


if __name__ == "__main__":
    main()
