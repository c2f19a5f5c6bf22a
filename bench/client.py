"""Client CPU per API write: the controller's request layer against kubernetes_asyncio's ApiClient.

Both issue the same writes an assignment causes (one Service status merge PATCH and one Event POST) to a
local kube-apiserver started here, with the same concurrency, in the same process, one after the other.
Only this process's CPU time is counted (the API server and etcd are other processes), so a machine shared
with other jobs changes the wall time much more than the figures here. kubernetes_asyncio is a development
dependency only (the controller no longer imports it); this is why it is still installed.

Usage: .venv/bin/python bench/client.py [--writes 2000] [--concurrency 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.kube.client import KubeClient
from controller.kube.events import rfc3339
from e2e.harness.cluster import LocalCluster

NAMESPACE = "bench-client"
MERGE_PATCH = "application/merge-patch+json"

Write = Callable[[str, str, dict[str, Any], str], Awaitable[None]]


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False,
                 "ports": [{"port": 80, "protocol": "TCP"}]},
    }


def status_patch(i: int, rnd: int) -> dict[str, Any]:
    ip = f"10.{rnd}.{i // 256}.{i % 256}"
    return {"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}}


def event(name: str, i: int, rnd: int) -> dict[str, Any]:
    stamp = rfc3339(time.time())
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.{rnd}-{i}", "namespace": NAMESPACE},
        "involvedObject": {"apiVersion": "v1", "kind": "Service", "name": name, "namespace": NAMESPACE},
        "type": "Normal",
        "reason": "IPAllocated",
        "message": f"assigned 10.{rnd}.{i // 256}.{i % 256} from pool bench",
        "count": 1,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "source": {"component": "bench"},
        "reportingComponent": "bench",
        "reportingInstance": "bench",
    }


async def run_writes(write: Write, names: list[str], rnd: int, concurrency: int) -> tuple[float, float]:
    """(client CPU seconds, wall seconds) for one status PATCH + one Event POST per name."""
    sem = asyncio.Semaphore(concurrency)
    base = f"/api/v1/namespaces/{NAMESPACE}"

    async def one(i: int, name: str) -> None:
        async with sem:
            await write("PATCH", f"{base}/services/{name}/status", status_patch(i, rnd), MERGE_PATCH)
            await write("POST", f"{base}/events", event(name, i, rnd), "application/json")

    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(one(i, name) for i, name in enumerate(names)))
    return time.process_time() - cpu0, time.monotonic() - t0


async def main_async(args: argparse.Namespace, cluster: LocalCluster) -> None:
    from kubernetes_asyncio.client import ApiClient, Configuration

    raw = KubeClient.for_host(cluster.server, token=cluster.token, verify_ssl=False)
    cfg = Configuration(host=cluster.server)
    cfg.verify_ssl = False
    old = ApiClient(configuration=cfg)
    # As the controller had it: proxy settings resolved once, not per request.
    old.rest_client.pool_manager._trust_env = False
    auth = f"Bearer {cluster.token}"

    async def raw_write(method: str, path: str, body: dict[str, Any], content_type: str) -> None:
        await raw.request(method, path, body=body, content_type=content_type)

    async def old_write(method: str, path: str, body: dict[str, Any], content_type: str) -> None:
        resp = await old.call_api(
            path, method, header_params={"Accept": "application/json", "Content-Type": content_type,
                                         "Authorization": auth},
            body=body, auth_settings=[], _preload_content=False,
        )
        async with resp:
            await resp.read()
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status}")

    try:
        await raw.request("POST", "/api/v1/namespaces", body={"metadata": {"name": NAMESPACE}})
        names = [f"svc-{i:05d}" for i in range(args.writes)]
        sem = asyncio.Semaphore(args.concurrency)

        async def create(name: str) -> None:
            async with sem:
                await raw.request("POST", f"/api/v1/namespaces/{NAMESPACE}/services", body=service(name))

        await asyncio.gather(*(create(n) for n in names))
        variants: list[tuple[str, Write]] = [("controller.kube.client (raw aiohttp, orjson)", raw_write),
                                             ("kubernetes_asyncio ApiClient.call_api", old_write)]
        results: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in variants}
        rnd = 0
        for _ in range(args.rounds):
            for label, write in variants:  # alternated, so drifting load hits both alike
                rnd += 1
                results[label].append(await run_writes(write, names, rnd, args.concurrency))
        print(f"\n{args.writes} x (status PATCH + Event POST), {args.concurrency} in flight, "
              f"{args.rounds} rounds each (alternating)")
        print("| client | CPU µs per write (best round) | all rounds | wall s (best round) |")
        print("|---|---:|---|---:|")
        for label, rows in results.items():
            per_write = [cpu / (2 * args.writes) * 1e6 for cpu, _ in rows]
            best = min(range(len(rows)), key=lambda k: per_write[k])
            print(f"| {label} | {per_write[best]:.0f} | {', '.join(f'{v:.0f}' for v in per_write)} "
                  f"| {rows[best][1]:.1f} |")
    finally:
        await raw.close()
        await old.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writes", type=int, default=2000, help="Services, each written twice per round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per client (default 2)")
    args = parser.parse_args()
    cluster = LocalCluster.start(dual_stack=False, name="bench-client")
    try:
        asyncio.run(main_async(args, cluster))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
