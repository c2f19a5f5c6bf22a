"""Informer ingest benchmark: raw orjson reflector vs kubernetes_asyncio's Watch + model classes.

A local aiohttp server on 127.0.0.1 serves an empty LIST and then one WATCH stream of N `ADDED`
events for synthetic Services shaped like real ones (managedFields, annotations, dual-stack spec,
status). Each path ingests the stream into a cache keyed namespace/name:

- raw:        controller.kube.Informer (orjson per line, default transform drops managedFields)
- raw-full:   the same with an identity transform (keeps everything, for a like-for-like size)
- model:      kubernetes_asyncio.watch.Watch over CoreV1Api.list_service_for_all_namespaces,
              objects deserialized into V1Service and cached

Reported: events/s (best of --repeat runs, without tracemalloc) and bytes per cached Service
(tracemalloc, a separate run: traced memory held by the cache after ingest minus before).

Usage: .venv/bin/python bench/informer.py [--count 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch as k8s_watch

from controller.kube.client import KubeClient
from controller.kube.informer import Informer, ListSettings
from controller.kube.resources import SERVICES


def synthetic_service(i: int) -> dict[str, Any]:
    ns = f"team-{i % 50}"
    name = f"svc-{i}"
    ts = "2026-11-26T12:00:00Z"
    return {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"6f1c2a4e-0000-4000-8000-{i:012d}",
            "resourceVersion": str(1000 + i),
            "creationTimestamp": ts,
            "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": ns, "tier": "web"},
            "annotations": {"stablelb.io/pool": "default", "stablelb.io/sharing-key": f"k{i % 7}"},
            "managedFields": [
                {"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1",
                 "time": ts, "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:stablelb.io/pool": {}},
                                             "f:labels": {".": {}, "f:tier": {}}},
                              "f:spec": {"f:externalTrafficPolicy": {}, "f:ports": {
                                  ".": {}, 'k:{"port":80,"protocol":"TCP"}': {
                                      ".": {}, "f:name": {}, "f:port": {}, "f:protocol": {},
                                      "f:targetPort": {}}}, "f:selector": {}, "f:type": {}}}},
                {"manager": "stablelb-controller", "operation": "Update", "apiVersion": "v1",
                 "time": ts, "fieldsType": "FieldsV1", "subresource": "status",
                 "fieldsV1": {"f:status": {"f:loadBalancer": {"f:ingress": {}}}}},
            ],
        },
        "spec": {
            "type": "LoadBalancer",
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080,
                       "nodePort": 30000 + i % 2000},
                      {"name": "https", "protocol": "TCP", "port": 443, "targetPort": 8443,
                       "nodePort": 32000 + i % 700}],
            "selector": {"app.kubernetes.io/name": name},
            "clusterIP": f"10.96.{i // 250 % 256}.{i % 250 + 1}",
            "clusterIPs": [f"10.96.{i // 250 % 256}.{i % 250 + 1}", f"fd00:10:96::{i:x}"],
            "sessionAffinity": "None",
            "externalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4", "IPv6"],
            "ipFamilyPolicy": "PreferDualStack",
            "allocateLoadBalancerNodePorts": True,
            "internalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {"ingress": [{"ip": f"192.168.{10 + i // 250 % 40}.{i % 250 + 1}",
                                                 "ipMode": "VIP"}]}},
    }


def build_stream(count: int) -> bytes:
    events = (orjson.dumps({"type": "ADDED", "object": synthetic_service(i)}) + b"\n" for i in range(count))
    return b"".join(events)


class StreamServer:
    def __init__(self, stream: bytes) -> None:
        self.stream = stream
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/services", self._services)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _services(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") not in ("true", "True", "1"):
            return web.json_response({"kind": "ServiceList", "apiVersion": "v1",
                                      "metadata": {"resourceVersion": "999"}, "items": []})
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        view = memoryview(self.stream)
        for off in range(0, len(view), 1 << 16):
            await resp.write(view[off:off + (1 << 16)])
        await asyncio.sleep(3600)  # an idle, healthy watch after the burst
        return resp


Cache = dict[str, Any]
Ingest = Callable[[str, int], Awaitable[Cache]]


async def ingest_raw(url: str, count: int, *, keep_all: bool = False) -> Cache:
    client = KubeClient.for_host(url)
    # The stream server speaks LIST + WATCH (an empty LIST, then the burst of events on the watch).
    informer = Informer(client, SERVICES, transform=(lambda o: o) if keep_all else None,
                        settings=ListSettings(watch_list=False))
    done = asyncio.Event()
    informer.add_handlers(on_add=lambda _: done.set() if len(informer.store) >= count else None)
    task = asyncio.create_task(informer.run())
    try:
        await done.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
    return {k: informer.store.get(k) for k in informer.store}


async def ingest_model(url: str, count: int) -> Cache:
    cfg = k8s.Configuration(host=url)
    api_client = k8s.ApiClient(configuration=cfg)
    core = k8s.CoreV1Api(api_client)
    cache: Cache = {}
    w = k8s_watch.Watch()
    try:
        async for event in w.stream(core.list_service_for_all_namespaces, timeout_seconds=600):
            obj = event["object"]
            cache[f"{obj.metadata.namespace}/{obj.metadata.name}"] = obj
            if len(cache) >= count:
                break
    finally:
        w.stop()
        await w.close()
        await api_client.close()
    return cache


async def timed(ingest: Ingest, url: str, count: int) -> float:
    gc.collect()
    start = time.perf_counter()
    cache = await ingest(url, count)
    elapsed = time.perf_counter() - start
    assert len(cache) == count, (len(cache), count)
    return count / elapsed


async def measured_bytes(ingest: Ingest, url: str, count: int) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache = await ingest(url, count)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(cache) == count
    return (after - before) / count


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    stream = build_stream(args.count)
    server = StreamServer(stream)
    await server.start()
    paths: list[tuple[str, Ingest]] = [
        ("raw orjson (controller.kube.Informer, managedFields dropped)", ingest_raw),
        ("raw orjson, no transform (everything kept)",
         lambda url, n: ingest_raw(url, n, keep_all=True)),
        ("kubernetes_asyncio Watch -> V1Service models", ingest_model),
    ]
    try:
        rows = []
        for label, ingest in paths:
            rates = [await timed(ingest, server.url, args.count) for _ in range(args.repeat)]
            per_obj = await measured_bytes(ingest, server.url, args.count)
            rows.append((label, max(rates), per_obj))
    finally:
        await server.stop()

    print(f"machine: {cpu_model()} x{os.cpu_count()} ({platform.machine()}) "
          f"python={platform.python_version()} {platform.system()} {platform.release()}")
    print(f"stream: {args.count} ADDED events, {len(stream) / args.count:.0f} bytes of JSON per Service")
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print()
    print(f"| path | events/s (best of {args.repeat}) | bytes per cached Service |")
    print("|---|---:|---:|")
    for label, rate, per_obj in rows:
        print(f"| {label} | {rate:,.0f} | {per_obj:,.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
