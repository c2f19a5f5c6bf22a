"""The release ledger under churn: how often and how big its IPPool status writes are at ~1,000 deletions/s.

Starts its own LocalCluster, applies manifests/ (without the Deployment), creates one IPPool and one
`python -m controller` process (leader election on, the manifests' ServiceAccount and RBAC), creates
--services LoadBalancer Services and waits until each has an IP. Then it deletes --deletions of them at
--rate per second (--concurrency requests in flight) while watching the IPPool, and reports:

- the deletion rate reached, and how long the churn lasted;
- ledger writes: IPPool MODIFIED events whose status.releaseLedger changed — in total, the most in any one
  second (the writer's bound is one per second per pool), and per second of churn;
- the ledger's size: entries and JSON bytes, the largest seen and the last, and the whole IPPool object;
- the API server's own count of ippools/status PATCHes by response code during the churn (the pool
  reconciler's count/condition writes and the ledger's; a 409 is a pool-status write that raced a ledger
  write and was retried);
- the lag from the last deletion answered to the ledger naming every deleted Service's address (or, past
  1,024 deletions, the last one's), and the controller's CPU seconds during the churn.

Usage: .venv/bin/python bench/ledger.py [--services 3000] [--deletions 3000] [--rate 1000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.kube.client import ApiError, KubeClient
from e2e.harness.cluster import LocalCluster
from e2e.harness.controllers import ControllerSet
from e2e.harness.manifests import MANIFESTS, install, load_kustomization

NAMESPACE = "bench-ledger"
POOL = "bench-ledger"
POOLS = "/apis/stablelb.io/v1alpha1/ippools"
SERVICES = f"/api/v1/namespaces/{NAMESPACE}/services"


def ledger_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    ledger = (obj.get("status") or {}).get("releaseLedger")
    return ledger if isinstance(ledger, dict) else None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def status_patches(client: KubeClient) -> Counter[str]:
    """The API server's ippools/status PATCH count by response code."""
    text = await _metrics(client)
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            labels = sample.labels
            if (sample.name == "apiserver_request_total" and labels.get("resource") == "ippools"
                    and labels.get("subresource") == "status" and labels.get("verb") == "PATCH"):
                out[labels.get("code", "?")] += int(sample.value)
    return out


async def _metrics(client: KubeClient) -> str:
    lines = [line.decode() async for line in client.stream_lines("/metrics", read_timeout=30)]
    return "\n".join(lines) + "\n"


class PoolWatch:
    """Every change of the pool's status, with the time it was seen."""

    def __init__(self, client: KubeClient, resource_version: str) -> None:
        self.client = client
        self.rv = resource_version
        # (time seen, entries, ledger JSON bytes, IPPool JSON bytes)
        self.ledger_writes: list[tuple[float, int, int, int]] = []
        self.other_writes = 0
        self.last_ledger: dict[str, Any] | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        query = {"watch": "1", "fieldSelector": f"metadata.name={POOL}", "resourceVersion": self.rv,
                 "allowWatchBookmarks": "false"}
        async for line in self.client.stream_lines(POOLS, query=query, read_timeout=600):
            event = orjson.loads(line)
            if event.get("type") != "MODIFIED":
                continue
            obj = event["object"]
            ledger = ledger_of(obj)
            if ledger != self.last_ledger:
                self.last_ledger = ledger
                entries = len((ledger or {}).get("entries") or [])
                self.ledger_writes.append((time.monotonic(), entries, len(orjson.dumps(ledger)),
                                           len(orjson.dumps(obj))))
            else:
                self.other_writes += 1

    def ips(self) -> list[str]:
        return [str(e.get("ip")) for e in (self.last_ledger or {}).get("entries") or []]


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="stablelb-bench-ledger-"))
    cluster = LocalCluster.start(dual_stack=False, name="bench-ledger", workdir=workdir / "cluster")
    controllers: ControllerSet | None = None
    try:
        install(cluster.api, [o for o in load_kustomization(MANIFESTS) if o["kind"] != "Deployment"])
        cluster.api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": NAMESPACE}})
        cluster.api.post(POOLS, {"apiVersion": "stablelb.io/v1alpha1", "kind": "IPPool",
                                 "metadata": {"name": POOL}, "spec": {"addresses": ["10.210.0.0/16"]}})
        kubeconfig = cluster.service_account_kubeconfig("kube-system", "stablelb-controller")
        controllers = ControllerSet(workdir / "controllers", default_kubeconfig=kubeconfig)
        (index,) = controllers(1, args=["--log-level=warning"])
        client = await KubeClient.from_kubeconfig(str(cluster.kubeconfig))
        try:
            await measure(args, client, controllers.pid(index))
        finally:
            await client.close()
    finally:
        if controllers is not None:
            controllers.stop_all()
        cluster.stop(check=False)


async def measure(args: argparse.Namespace, client: KubeClient, pid: int) -> None:
    names = [f"s{i:05d}" for i in range(args.services)]
    gate = asyncio.Semaphore(args.concurrency)

    async def create(name: str) -> None:
        async with gate:
            await client.request("POST", SERVICES, body={
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80}],
                         "allocateLoadBalancerNodePorts": False},
            })

    started = time.monotonic()
    await asyncio.gather(*(create(n) for n in names))
    while True:
        items = (await client.request("GET", SERVICES))["items"]
        served = sum(bool((i.get("status") or {}).get("loadBalancer", {}).get("ingress")) for i in items)
        if served == len(names):
            break
        await asyncio.sleep(1.0)
    print(f"{len(names)} Services served in {time.monotonic() - started:.1f} s", flush=True)
    await asyncio.sleep(2.0)  # the pool reconciler's count write after the last allocation

    pool = await client.request("GET", f"{POOLS}/{POOL}")
    watch = PoolWatch(client, pool["metadata"]["resourceVersion"])
    patches_before = await status_patches(client)
    cpu_before = cpu_seconds(pid)
    doomed = names[: args.deletions]

    async def delete(name: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        async with gate:
            try:
                await client.request("DELETE", f"{SERVICES}/{name}")
            except ApiError as exc:
                if exc.status != 404:
                    raise

    t0 = time.monotonic() + 0.2
    await asyncio.gather(*(delete(n, t0 + i / args.rate) for i, n in enumerate(doomed)))
    churn_end = time.monotonic()
    churn = churn_end - t0
    # Caught up: as many entries as deletions (up to the bound), the last Service deleted among them.
    deadline = churn_end + 60
    target = min(len(doomed), 1024)
    last = f"{NAMESPACE}/{doomed[-1]}"
    while time.monotonic() < deadline:
        entries = (watch.last_ledger or {}).get("entries") or []
        if len(entries) >= target and any(e.get("service") == last for e in entries):
            break
        await asyncio.sleep(0.05)
    lag = time.monotonic() - churn_end
    await asyncio.sleep(3.0)  # anything still coming
    cpu = cpu_seconds(pid) - cpu_before
    patches = await status_patches(client)
    patches.subtract(patches_before)
    watch.task.cancel()

    writes = watch.ledger_writes
    per_second = Counter(int(t - t0) for t, *_ in writes)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(writes)]
    in_churn = [w for w in writes if w[0] <= churn_end + 1.0]
    rows = [
        ("deletions", f"{len(doomed)}"),
        ("deletion rate reached", f"{len(doomed) / churn:.0f}/s over {churn:.2f} s"),
        ("ledger writes (total, until settled)", f"{len(writes)}"),
        ("ledger writes, most in one second", f"{max(per_second.values(), default=0)}"),
        ("shortest gap between two ledger writes seen", f"{min(gaps, default=0.0):.2f} s"),
        ("ledger writes per second of churn", f"{len(in_churn) / max(churn, 1e-9):.2f}"),
        ("ledger entries, largest / last", f"{max((w[1] for w in writes), default=0)} / "
                                           f"{writes[-1][1] if writes else 0}"),
        ("ledger JSON bytes, largest / last", f"{max((w[2] for w in writes), default=0)} / "
                                              f"{writes[-1][2] if writes else 0}"),
        ("IPPool object bytes, largest", f"{max((w[3] for w in writes), default=0)}"),
        ("bytes of ledger written per second of churn",
         f"{sum(w[2] for w in in_churn) / max(churn, 1e-9):.0f}"),
        ("other pool status changes (counts, conditions)", f"{watch.other_writes}"),
        ("ippools/status PATCH by code", ", ".join(f"{c}: {n}" for c, n in sorted(patches.items()) if n)),
        ("lag, last deletion answered → ledger caught up", f"{lag:.2f} s"),
        ("controller CPU during churn and settling", f"{cpu:.1f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"\nmachine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; {args.services} Services, pool 10.210.0.0/16")
    print(f"| {'measure':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=3000, help="LoadBalancer Services created (3000)")
    parser.add_argument("--deletions", type=int, default=3000, help="how many of them are deleted (3000)")
    parser.add_argument("--rate", type=float, default=1000.0, help="deletions per second asked for (1000)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (64)")
    args = parser.parse_args()
    if args.deletions > args.services:
        parser.error("--deletions cannot exceed --services")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
