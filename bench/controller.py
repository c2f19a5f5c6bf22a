"""Controller at scale: one `python -m controller` against a local API server with N LoadBalancer Services.

Starts its own LocalCluster (dual-stack), applies manifests/, creates an IPPool of exactly N addresses
(10.200.0.0 upwards, data only: nothing ever contacts them) and one controller process (leader election on,
running as the stablelb-controller ServiceAccount with the manifests' RBAC). Services are spread over
--namespaces namespaces; --total T > N adds T - N headless ClusterIP Services (created before the controller
starts) so the population looks like a real cluster's: many Services, few of them LoadBalancers. Measures:

0. the bare limit: the same N LoadBalancer Services created by this load generator with no controller
   running, each followed by the status PATCH and the Event a controller would write (same concurrency,
   same run; deleted again before the controller starts);
1. time until all N Services, created with --concurrency parallel requests, have an IP (seen on a watch),
   against that bare limit;
2. Service status writes per Service in that phase (MODIFIED events on the watch; also the API server's
   own request counters for services/status, ippools/status and Events);
3. with the pool now exactly full, one more Service waits Pending; deleting one Service of N must change
   no other Service (resourceVersion watch over --settle seconds) except the pending one, which gets
   the freed IP (time reported);
4. controller CPU seconds (utime+stime) and peak RSS (VmHWM);
5. controller CPU per non-LoadBalancer Service event (--non-lb-events creates + as many updates);
6. restart (SIGTERM; one LoadBalancer Service deleted and a new one created while it is down; start again):
   time from process start to /readyz 200, to the new Service served, and to every Service reconciled
   (reconcile count from /metrics, queue empty), the writes that caused, and the peak RSS of that process.

Usage: .venv/bin/python bench/controller.py --services 1000 [--total 10000 --namespaces 100] [--keep]
                                          [--profile]
  --keep      copy the logs (controller, kube-apiserver, etcd) to a directory printed at the end
  --profile   run the controller under cProfile and print its top functions (slower; separate run)
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import ipaddress
import os
import platform
import pstats
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2e.harness.cluster import LocalCluster
from e2e.harness.controllers import ControllerSet
from e2e.harness.manifests import MANIFESTS, install, load_kustomization

NAMESPACE = "bench"
BARE_NAMESPACE = "bench-bare"
POOL = "bench"
BARE_IP_BASE = ipaddress.IPv4Address("10.250.0.0")
POOL_START = ipaddress.IPv4Address("10.200.0.0")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------ small tools


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the ")".
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called `name` in a Prometheus text exposition."""
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out.append((dict(s.labels), float(s.value)))
    return out


def write_counts(cluster: LocalCluster) -> Counter[str]:
    """The API server's own counters of the writes that matter here (nothing else writes them)."""
    text = cluster.api.get("/metrics").get("raw", "")
    counts: Counter[str] = Counter()
    for labels, value in samples(text, "apiserver_request_total"):
        verb, resource, sub = labels.get("verb"), labels.get("resource"), labels.get("subresource", "")
        if (
            verb in ("PATCH", "PUT", "UPDATE", "APPLY")
            and sub == "status"
            and resource in ("services", "ippools")
        ):
            counts[f"{resource}/status"] += int(value)
        elif verb == "POST" and resource == "events":
            counts["events created"] += int(value)
        elif verb in ("PATCH", "PUT") and resource == "events":
            counts["events updated"] += int(value)
    return counts


def diff(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    keys = ("services/status", "ippools/status", "events created", "events updated")
    return {k: after[k] - before[k] for k in keys}


# ------------------------------------------------------------------------------------------ watch


@dataclass
class ServiceWatch:
    """Every event on the namespace's Services from a resourceVersion on, with arrival times."""

    modified: Counter[str] = field(default_factory=Counter)
    assigned_at: dict[str, float] = field(default_factory=dict)
    ips: dict[str, list[str]] = field(default_factory=dict)
    events: int = 0
    task: asyncio.Task[None] | None = None

    def record(self, event: dict[str, Any]) -> None:
        obj = event["object"]
        if event["type"] == "BOOKMARK":
            return
        if event["type"] == "ERROR":
            raise RuntimeError(f"watch error: {obj}")
        self.events += 1
        name = obj["metadata"]["name"]
        if event["type"] == "MODIFIED":
            self.modified[name] += 1
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        ips = [e["ip"] for e in ingress if "ip" in e]
        if ips and name not in self.assigned_at:
            self.assigned_at[name] = time.monotonic()
        self.ips[name] = ips


async def run_watch(session: aiohttp.ClientSession, base: str, rv: str, watch: ServiceWatch) -> None:
    # Every namespace, LoadBalancer Services only (the background population is not what is measured).
    query = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "3600",
             "fieldSelector": "spec.type=LoadBalancer"}
    url = f"{base}/api/v1/services"
    async with session.get(url, params=query, timeout=aiohttp.ClientTimeout(total=None)) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            if line.strip():
                watch.record(orjson.loads(line))


async def start_watch(session: aiohttp.ClientSession, base: str, rv: str) -> ServiceWatch:
    watch = ServiceWatch()
    watch.task = asyncio.create_task(run_watch(session, base, rv, watch))
    await asyncio.sleep(0.2)
    return watch


async def stop_watch(watch: ServiceWatch) -> None:
    assert watch.task is not None
    if watch.task.done():
        watch.task.result()  # surfaces a watch failure
    watch.task.cancel()
    await asyncio.gather(watch.task, return_exceptions=True)


async def wait_until(predicate: Callable[[], bool], what: str, limit: float, watch: ServiceWatch) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if watch.task is not None and watch.task.done():
            watch.task.result()
            raise RuntimeError("watch ended early")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {limit:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------------------ the bench


def service_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": "LoadBalancer",
            "allocateLoadBalancerNodePorts": False,
            "selector": {"app": name},
            "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
        },
    }


def background_body(name: str) -> dict[str, Any]:
    """A Service that is not a LoadBalancer: headless, so the API server allocates no ClusterIP for it."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {"app": name, "tier": "backend"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "None",
            "selector": {"app": name},
            "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
        },
    }


def service_name(i: int) -> str:
    return f"svc-{i:05d}"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.n: int = args.services
        self.background = max(0, args.total - self.n) if args.total else 0
        count = max(1, args.namespaces)
        self.namespaces = [NAMESPACE] if count == 1 else [f"{NAMESPACE}-{k:03d}" for k in range(count)]
        self.ns_of: dict[str, str] = {}
        self.rows: list[tuple[str, str]] = []
        self.cluster: LocalCluster | None = None
        self.controllers: ControllerSet | None = None
        self.current = 0
        self.ips: dict[str, list[str]] = {}
        self.kubeconfig: Path | None = None
        self.bare_seconds = 0.0
        self.profile_dir = Path(tempfile.mkdtemp(prefix="stablelb-bench-prof-")) if args.profile else None

    def row(self, name: str, value: str) -> None:
        self.rows.append((name, value))
        log(f"{name}: {value}")

    # -- setup ------------------------------------------------------------------------------------
    def setup(self) -> None:
        # The image runs from bytecode compiled at build time (Dockerfile). Where the environment forbids
        # writing it (PYTHONDONTWRITEBYTECODE), every controller start here would compile the package from
        # source (~0.2 s of a restart): compile it once, as the image build does.
        compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "controller"), quiet=1)
        log("starting LocalCluster (dual-stack)")
        self.cluster = cluster = LocalCluster.start(dual_stack=True, name="bench")
        install(cluster.api, load_kustomization(MANIFESTS))
        for ns in [*self.namespaces, BARE_NAMESPACE]:
            cluster.api.post(
                "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            )
        last = POOL_START + self.n + self.args.backlog - 1
        cluster.api.post(
            "/apis/stablelb.io/v1alpha1/ippools",
            {
                "apiVersion": "stablelb.io/v1alpha1",
                "kind": "IPPool",
                "metadata": {"name": POOL},
                "spec": {"addresses": [f"{POOL_START}-{last}"]},
            },
        )
        self.kubeconfig = cluster.service_account_kubeconfig("kube-system", "stablelb-controller")
        self.controllers = ControllerSet(cluster.workdir / "logs", default_kubeconfig=self.kubeconfig)

    def start_controller(self) -> float:
        assert self.controllers is not None
        if self.profile_dir is not None:
            # cProfile writes its file at exit: one file per process.
            out = self.profile_dir / f"controller-{len(self.controllers)}.prof"
            self.controllers.command = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "controller"]
        started = time.monotonic()
        (self.current,) = self.controllers(1, args=["--log-level", "info"])
        return started

    def metrics_url(self) -> str:
        assert self.controllers is not None
        return f"http://{self.controllers.http_addr(self.current)}/metrics"

    def readyz_url(self) -> str:
        assert self.controllers is not None
        return f"http://{self.controllers.http_addr(self.current)}/readyz"

    def controller_metrics(self) -> str:
        return http_get(self.metrics_url())[1]

    def is_leader(self) -> bool:
        return any(v == 1.0 for _, v in samples(self.controller_metrics(), "stablelb_leader"))

    def reconciled(self) -> tuple[int, int]:
        """(Service reconciles so far, Service queue depth) from the controller's /metrics."""
        text = self.controller_metrics()
        count = sum(
            v
            for l_, v in samples(text, "stablelb_reconcile_duration_seconds_count")
            if l_.get("kind") == "Service"
        )
        depth = sum(v for l_, v in samples(text, "stablelb_workqueue_depth") if l_.get("name") == "services")
        return int(count), int(depth)

    def wait_ready_and_leading(self, started: float) -> tuple[float, float]:
        assert self.controllers is not None
        ready = leading = None
        deadline = started + 120
        while (ready is None or leading is None) and time.monotonic() < deadline:
            if not self.controllers.alive(self.current):
                raise RuntimeError("controller exited:\n" + self.controllers.describe(40))
            if ready is None and http_get(self.readyz_url(), timeout=2)[0] == 200:
                ready = time.monotonic() - started
            if leading is None and self.is_leader():
                leading = time.monotonic() - started
            time.sleep(0.02)
        if ready is None or leading is None:
            raise TimeoutError(
                "controller not ready and leading after 120s:\n" + self.controllers.describe(40)
            )
        return ready, leading

    def start_py_spy(self, phase: str) -> subprocess.Popen[bytes] | None:
        """py-spy sampling the controller (collapsed stacks), when --py-spy DIR was given."""
        if not self.args.py_spy:
            return None
        out = Path(self.args.py_spy) / f"controller-n{self.n}-{phase}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        py_spy = Path(sys.executable).parent / "py-spy"
        argv = [str(py_spy), "record", "--pid", str(self.pid()), "--format", "raw", "--rate", "100"]
        return subprocess.Popen(
            [*argv, "--nonblocking", "--output", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @staticmethod
    def stop_py_spy(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def cluster_cpu(self) -> dict[str, float]:
        assert self.cluster is not None
        return {name: cpu_seconds(pid) for name, pid in self.cluster.pids.items()}

    def pid(self) -> int:
        assert self.controllers is not None
        return self.controllers.pid(self.current)

    # -- phases -----------------------------------------------------------------------------------
    def namespace(self, name: str) -> str:
        """Where a Service lives: svc-NNNNN round-robin over the namespaces, everything else in the first."""
        ns = self.ns_of.get(name)
        if ns is None:
            index = int(name.rsplit("-", 1)[1]) if name.startswith("svc-") else 0
            ns = self.ns_of[name] = self.namespaces[index % len(self.namespaces)]
        return ns

    def svc_path(self, name: str) -> str:
        return f"/api/v1/namespaces/{self.namespace(name)}/services/{name}"

    async def send(
        self, session: aiohttp.ClientSession, method: str, path: str, body: Any, *, patch: bool = False
    ) -> None:
        assert self.cluster is not None
        url = f"{self.cluster.server}{path}"
        headers = {"Content-Type": "application/merge-patch+json"} if patch else None
        for attempt in range(5):
            async with session.request(method, url, data=orjson.dumps(body), headers=headers) as resp:
                if resp.status < 300:
                    return
                if resp.status in (429, 500, 503, 504) and attempt < 4 and method != "DELETE":
                    await asyncio.sleep(0.5)
                    continue
                raise RuntimeError(f"{method} {path}: {resp.status} {await resp.text()}")

    async def create_services(
        self,
        session: aiohttp.ClientSession,
        names: list[str],
        body: Callable[[str], dict[str, Any]] = service_body,
        concurrency: int | None = None,
    ) -> None:
        sem = asyncio.Semaphore(concurrency or self.args.concurrency)

        async def create(name: str) -> None:
            async with sem:
                path = f"/api/v1/namespaces/{self.namespace(name)}/services"
                await self.send(session, "POST", path, body(name))

        await asyncio.gather(*(create(name) for name in names))

    def current_rv(self) -> str:
        assert self.cluster is not None
        return str(self.cluster.api.get("/api/v1/services?limit=1")["metadata"]["resourceVersion"])

    async def phase_bare(self, session: aiohttp.ClientSession) -> None:
        """The work any controller must cause, issued by the load generator alone: create, PATCH, Event."""
        sem = asyncio.Semaphore(self.args.concurrency)
        base = f"/api/v1/namespaces/{BARE_NAMESPACE}"

        async def one(i: int) -> None:
            name = f"bare-{i:05d}"
            async with sem:
                await self.send(session, "POST", f"{base}/services", service_body(name))
                ip = str(BARE_IP_BASE + i)
                status = {"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}}
                await self.send(session, "PATCH", f"{base}/services/{name}/status", status, patch=True)
                event = {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"generateName": f"{name}."},
                    "involvedObject": {"kind": "Service", "apiVersion": "v1", "namespace": BARE_NAMESPACE,
                                       "name": name},
                    "reason": "IPAllocated",
                    "message": f"assigned {ip} from pool bare",
                    "type": "Normal",
                    "source": {"component": "bench-bare"},
                    "count": 1,
                }
                await self.send(session, "POST", f"{base}/events", event)

        log(f"bare limit: {self.n} x (create + status PATCH + Event), no controller")
        t0, cpu0, server0 = time.monotonic(), time.process_time(), self.cluster_cpu()
        await asyncio.gather(*(one(i) for i in range(self.n)))
        self.bare_seconds = time.monotonic() - t0
        server = {k: v - server0.get(k, 0.0) for k, v in self.cluster_cpu().items()}
        # This process's own CPU for the same requests (aiohttp over TLS, as the controller): what the
        # HTTP client alone costs on this machine at this load, a floor for the controller's CPU too.
        bare_cpu = time.process_time() - cpu0
        self.row("bare limit: N x (create + PATCH + Event), no controller",
                 f"{self.bare_seconds:.1f} s ({self.n / self.bare_seconds:.0f} Services/s)")
        self.row("bare limit: load generator CPU per request (create, PATCH, Event alike)",
                 f"{bare_cpu / (3 * self.n) * 1e6:.0f} µs ({bare_cpu:.1f} s for {3 * self.n} requests)")
        self.row("bare limit: API server / etcd CPU",
                 " / ".join(f"{server.get(k, 0.0):.1f} s" for k in ("kube-apiserver", "etcd")))
        # DELETE per collection: the controller must never see these. A collection of 10,000 outlives the API
        # server's 60 s request timeout (504) while the server keeps deleting: repeat until it is empty.
        for collection in ("services", "events"):
            for _ in range(60):
                try:
                    await self.send(session, "DELETE", f"{base}/{collection}", {})
                    break
                except RuntimeError as exc:
                    if " 504 " not in str(exc):
                        raise
                    log(f"deleting {collection} of {BARE_NAMESPACE}: {exc}; again")

    async def phase_background(self, session: aiohttp.ClientSession) -> None:
        if not self.background:
            return
        log(f"creating {self.background} headless ClusterIP Services over {len(self.namespaces)} namespaces")
        t0 = time.monotonic()
        names = [f"bg-{i:06d}" for i in range(self.background)]
        for i, name in enumerate(names):
            self.ns_of[name] = self.namespaces[i % len(self.namespaces)]
        await self.create_services(session, names, background_body, concurrency=self.args.concurrency * 2)
        took = time.monotonic() - t0
        self.row(f"background: {self.background} non-LB Services created",
                 f"{took:.1f} s ({self.background / took:.0f}/s)")

    async def phase_non_lb_events(self, session: aiohttp.ClientSession) -> None:
        """Controller CPU per event on a Service that is not a LoadBalancer (create, then update)."""
        m = self.args.non_lb_events
        if not m:
            return
        names = [f"nonlb-{i:05d}" for i in range(m)]
        for i, name in enumerate(names):
            self.ns_of[name] = self.namespaces[i % len(self.namespaces)]
        pid = self.pid()
        idle0 = cpu_seconds(pid)
        t_idle = time.monotonic()
        await asyncio.sleep(5.0)
        idle_rate = (cpu_seconds(pid) - idle0) / (time.monotonic() - t_idle)
        cpu0 = cpu_seconds(pid)
        t0 = time.monotonic()
        await self.create_services(session, names, background_body)
        sem = asyncio.Semaphore(self.args.concurrency)

        async def touch(name: str) -> None:
            async with sem:
                await self.send(session, "PATCH", self.svc_path(name),
                                {"metadata": {"labels": {"touched": "yes"}}}, patch=True)

        await asyncio.gather(*(touch(name) for name in names))
        await asyncio.sleep(2.0)  # let the controller drain what it was sent
        took = time.monotonic() - t0
        cpu = cpu_seconds(pid) - cpu0
        net = max(0.0, cpu - idle_rate * took)
        self.row(f"non-LB Service events ({2 * m}: create + update)",
                 f"controller CPU {cpu:.2f} s over {took:.0f} s; minus idle ({idle_rate * 1000:.0f} ms/s): "
                 f"{net / (2 * m) * 1e6:.0f} µs/event")

    async def phase_backlog(self, session: aiohttp.ClientSession) -> None:
        """M Services already waiting when the controller starts: its throughput without the create rate."""
        assert self.cluster is not None
        m = self.args.backlog
        names = [f"backlog-{i:05d}" for i in range(m)]
        log(f"creating {m} backlog Services with no controller running")
        await self.create_services(session, names)
        rv = self.current_rv()
        before = write_counts(self.cluster)
        watch = await start_watch(session, self.cluster.server, rv)
        started = self.start_controller()
        ready, leading = await asyncio.to_thread(self.wait_ready_and_leading, started)
        await wait_until(lambda: len(watch.assigned_at) >= m, "all backlog Services assigned", 900, watch)
        took = max(watch.assigned_at.values()) - started
        first = min(watch.assigned_at.values()) - started
        cpu = cpu_seconds(self.pid())
        await asyncio.sleep(self.args.settle)
        await stop_watch(watch)
        writes = diff(write_counts(self.cluster), before)
        self.row(f"backlog of {m}: start -> /readyz 200, leader", f"{ready:.2f} s, {leading:.2f} s")
        self.row(f"backlog of {m}: start -> first, last assigned", f"{first:.2f} s, {took:.2f} s")
        self.row(
            f"backlog of {m}: assignment rate (first to last)",
            f"{(m - 1) / max(took - first, 1e-9):.0f} Services/s",
        )
        self.row(
            f"backlog of {m}: status writes per Service (watch)", f"{sum(watch.modified.values()) / m:.3f}"
        )
        self.row(f"backlog of {m}: API writes", ", ".join(f"{k} {v}" for k, v in writes.items()))
        self.row(f"backlog of {m}: controller CPU to all assigned", f"{cpu:.1f} s")

    async def phase_create(self, session: aiohttp.ClientSession) -> None:
        assert self.cluster is not None
        base = self.cluster.server
        rv = self.current_rv()
        before = write_counts(self.cluster)
        cpu0 = cpu_seconds(self.pid())
        server_cpu0 = self.cluster_cpu()
        spy = self.start_py_spy("create")
        watch = await start_watch(session, base, rv)
        log(f"creating {self.n} Services, {self.args.concurrency} at a time")
        t0 = time.monotonic()
        await self.create_services(session, [service_name(i) for i in range(self.n)])
        created = time.monotonic() - t0
        await wait_until(lambda: len(watch.assigned_at) >= self.n, "all Services assigned", 600, watch)
        t_all = max(watch.assigned_at.values()) - t0
        cpu1 = cpu_seconds(self.pid())
        server_cpu = {k: v - server_cpu0[k] for k, v in self.cluster_cpu().items()}
        self.stop_py_spy(spy)
        await asyncio.sleep(self.args.settle)  # late writes (a second pass, pool status) count too
        await stop_watch(watch)
        writes = diff(write_counts(self.cluster), before)
        per_service = Counter(watch.modified[service_name(i)] for i in range(self.n))
        self.ips = dict(watch.ips)
        ips = {ip for i in range(self.n) for ip in watch.ips[service_name(i)]}
        if len(ips) != self.n:
            raise AssertionError(f"{self.n} Services hold {len(ips)} distinct IPs")

        self.row(
            "create N Services (client, 32 parallel)", f"{created:.1f} s ({self.n / created:.0f} creates/s)"
        )
        self.row(
            "time to all assigned (from first create)", f"{t_all:.1f} s ({self.n / t_all:.0f} Services/s)"
        )
        self.row("last assignment after last create", f"{t_all - created:.2f} s")
        self.row(
            "Service status writes per Service (watch)",
            f"{sum(watch.modified.values()) / self.n:.3f} (distribution {dict(sorted(per_service.items()))})",
        )
        self.row(
            "API writes in phase (apiserver counters)",
            ", ".join(f"{k} {v}" for k, v in writes.items()),
        )
        self.row(
            "controller CPU during create phase",
            f"{cpu1 - cpu0:.1f} s ({(cpu1 - cpu0) / self.n * 1000:.2f} CPU-s per 1,000 assignments)",
        )
        if self.bare_seconds:
            self.row("assignment vs bare limit (bare time / controller time)",
                     f"{self.bare_seconds / t_all:.2f}")
        self.row(
            "API server / etcd CPU during create phase",
            " / ".join(f"{server_cpu.get(k, 0.0):.1f} s" for k in ("kube-apiserver", "etcd")),
        )

    async def phase_delete_one(self, session: aiohttp.ClientSession) -> None:
        assert self.cluster is not None
        api, base = self.cluster.api, self.cluster.server
        pool = api.get(f"/apis/stablelb.io/v1alpha1/ippools/{POOL}")
        log(f"pool status before: {orjson.dumps(pool.get('status', {}).get('ipv4')).decode()}")
        rv = self.current_rv()
        watch = await start_watch(session, base, rv)
        pending = "pending-0"
        api.post(f"/api/v1/namespaces/{self.namespace(pending)}/services", service_body(pending))
        # The pool is exactly full: the controller records Pending (one write, no IP).
        await wait_until(
            lambda: watch.modified[pending] >= 1, "Pending status on the extra Service", 60, watch
        )
        if watch.ips.get(pending):
            raise AssertionError(f"the pool was meant to be full, yet {pending} got {watch.ips[pending]}")
        await asyncio.sleep(1.0)
        before = write_counts(self.cluster)
        modified_before = Counter(watch.modified)
        victim = service_name(self.n // 2)
        freed = self.ips[victim]
        t0 = time.monotonic()
        await asyncio.to_thread(api.delete, self.svc_path(victim))
        await wait_until(
            lambda: pending in watch.assigned_at, "the pending Service to get the freed IP", 60, watch
        )
        took = watch.assigned_at[pending] - t0
        await asyncio.sleep(self.args.settle)
        await stop_watch(watch)
        writes = diff(write_counts(self.cluster), before)
        others = sorted(
            name
            for name, count in watch.modified.items()
            if count > modified_before[name] and name not in (victim, pending)
        )
        self.row(
            "delete 1 of N: other Services written",
            f"{len(others)} in {self.args.settle:.0f} s{' ' + str(others[:5]) if others else ''}",
        )
        self.row(
            "delete 1 of N: pending Service gets freed IP",
            f"{took * 1000:.0f} ms ({watch.ips[pending]} == freed {freed}: {watch.ips[pending] == freed})",
        )
        self.row(
            "delete 1 of N: API writes (apiserver counters)",
            ", ".join(f"{k} {v}" for k, v in writes.items()),
        )

    def resources(self, label: str) -> None:
        pid = self.pid()
        peak, now = status_kib(pid, "VmHWM") / 1024, status_kib(pid, "VmRSS") / 1024
        self.row(
            f"controller CPU / peak RSS ({label})",
            f"{cpu_seconds(pid):.1f} s / {peak:.0f} MiB (RSS now {now:.0f} MiB)",
        )

    async def phase_restart(self, session: aiohttp.ClientSession) -> None:
        assert self.cluster is not None and self.controllers is not None
        api, base = self.cluster.api, self.cluster.server
        total = self.n + self.args.backlog  # one deleted, the formerly pending one took its place
        rv = self.current_rv()
        watch = await start_watch(session, base, rv)
        before = write_counts(self.cluster)
        t_stop = time.monotonic()
        code = self.controllers.stop(self.current)
        stop_took = time.monotonic() - t_stop
        # While it is down: one Service goes, a new one comes (it needs the freed address).
        await asyncio.to_thread(api.delete, self.svc_path(service_name(self.n // 2 + 1)))
        fresh = "restart-new"
        await self.send(session, "POST", f"/api/v1/namespaces/{self.namespace(fresh)}/services",
                        service_body(fresh))
        started = self.start_controller()
        spy = self.start_py_spy("restart")
        await wait_until(lambda: fresh in watch.assigned_at, "the new Service served", 600, watch)
        first_served = watch.assigned_at[fresh] - started
        ready, leading = await asyncio.to_thread(self.wait_ready_and_leading, started)
        reconciled_at = None
        deadline = started + 600
        while time.monotonic() < deadline:
            count, depth = self.reconciled()
            if count >= total and depth == 0:
                reconciled_at = time.monotonic() - started
                break
            await asyncio.sleep(0.05)
        self.stop_py_spy(spy)
        if reconciled_at is None:
            raise TimeoutError(f"restart: not every Service reconciled after 600s ({self.reconciled()})")
        cpu = cpu_seconds(self.pid())
        await asyncio.sleep(self.args.settle)
        await stop_watch(watch)
        writes = diff(write_counts(self.cluster), before)
        self.row("restart: old controller stop (SIGTERM)", f"{stop_took:.2f} s, exit code {code}")
        self.row("restart: start -> /readyz 200", f"{ready:.2f} s")
        self.row("restart: start -> leader", f"{leading:.2f} s")
        self.row("restart: start -> new Service served", f"{first_served:.2f} s")
        self.row(f"restart: start -> all {total} Services reconciled", f"{reconciled_at:.2f} s")
        self.row(
            "restart: Service status writes (watch)",
            f"{sum(watch.modified.values())} (events seen: {watch.events})",
        )
        self.row("restart: API writes (apiserver counters)", ", ".join(f"{k} {v}" for k, v in writes.items()))
        self.row("restart: controller CPU to all reconciled", f"{cpu:.1f} s")

    async def phases(self) -> None:
        assert self.cluster is not None
        headers = {"Authorization": f"Bearer {self.cluster.token}", "Content-Type": "application/json"}
        ctx = ssl._create_unverified_context()
        connector = aiohttp.TCPConnector(ssl=ctx, limit=self.args.concurrency + 4)
        async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
            if self.args.bare:
                await self.phase_bare(session)
            await self.phase_background(session)
            if self.args.backlog:
                await self.phase_backlog(session)
            else:
                started = self.start_controller()
                ready, leading = await asyncio.to_thread(self.wait_ready_and_leading, started)
                log(f"controller ready after {ready:.2f} s, leading after {leading:.2f} s (no Services)")
            await self.phase_create(session)
            await self.phase_delete_one(session)
            self.resources("after create + delete phases")
            await self.phase_non_lb_events(session)
            await self.phase_restart(session)
            self.resources("restarted process, after adoption")

    def run(self) -> None:
        self.setup()
        asyncio.run(self.phases())

    def cleanup(self) -> None:
        if self.controllers is not None:
            self.controllers.stop_all()
        if self.cluster is not None:
            if self.args.keep:
                kept = Path(tempfile.mkdtemp(prefix="stablelb-bench-logs-"))
                shutil.copytree(self.cluster.workdir / "logs", kept / "logs")
                log(f"logs kept in {kept / 'logs'}")
            self.cluster.stop()

    def report(self) -> None:
        width = max((len(name) for name, _ in self.rows), default=10)
        size = self.n + self.args.backlog
        print(
            f"\nN = {self.n} (+ backlog {self.args.backlog}) LoadBalancer Services, pool of exactly {size} "
            f"IPv4 addresses; {self.background} other Services; {len(self.namespaces)} namespace(s)"
        )
        print(f"python {platform.python_version()}, nproc {os.cpu_count()}, {platform.platform()}")
        print(f"| {'measure'.ljust(width)} | value |")
        print(f"|{'-' * (width + 2)}|---|")
        for name, value in self.rows:
            print(f"| {name.ljust(width)} | {value} |")
        if self.profile_dir is not None:
            for path in sorted(self.profile_dir.glob("*.prof")):
                print(f"\ncProfile of {path.name} (cumulative, top 40):")
                pstats.Stats(str(path)).sort_stats("cumulative").print_stats(40)
                print("\n(tottime, top 30):")
                pstats.Stats(str(path)).sort_stats("tottime").print_stats(30)
            if not self.args.keep:
                shutil.rmtree(self.profile_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=1000, help="N (default 1000)")
    parser.add_argument("--concurrency", type=int, default=32, help="parallel create requests (default 32)")
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds to watch for late writes (default 5)"
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="M extra Services created before the controller starts (its raw assignment rate)",
    )
    parser.add_argument(
        "--py-spy", metavar="DIR",
        help="sample the controller with py-spy during the create phase and the restart into DIR",
    )
    parser.add_argument("--total", type=int, default=0,
                        help="all Services incl. headless ClusterIP ones (default: N, only LoadBalancers)")
    parser.add_argument("--namespaces", type=int, default=1, help="namespaces to spread Services over")
    parser.add_argument("--non-lb-events", type=int, default=1000,
                        help="non-LB Services created then updated: CPU per such event (default 1000)")
    parser.add_argument("--no-bare", dest="bare", action="store_false",
                        help="skip the bare create+PATCH+Event limit measurement")
    parser.add_argument("--keep", action="store_true", help="keep the logs in a directory printed at the end")
    parser.add_argument("--profile", action="store_true", help="run the controller under cProfile")
    args = parser.parse_args()
    bench = Bench(args)
    try:
        bench.run()
    finally:
        try:
            bench.cleanup()
        finally:
            bench.report()


if __name__ == "__main__":
    main()
